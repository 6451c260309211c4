"""`niyama serve --emulate`: the real server in front of an emulated device, as a client sees it.

One server (a subprocess on a free port) emulates a device whose profile
takes 80 ms a step whatever its shape, 1.25 times slower than that profile
says (`--truth-bias`), with a 50 000-token KV cache and output lengths drawn
from a two-row trace (3 or 5 tokens). Its worker loads no model and no torch.
"""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from niyama.bench.prometheus import parse
from niyama.bench.servers import running_server
from niyama.qos.predictor import LatencyPredictor
from niyama.router import serve

STEP_SECONDS = 0.08  # every shape, in the profile
BIAS = 1.25  # the emulated device is this much slower than its profile
KV_TOKENS = 50_000
SHORT, LONG = 3, 5  # the trace's output lengths


@pytest.fixture(scope="module")
def profile(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("emulated")
    shapes = itertools.product((0, 16, 128, 512), (0, 1, 8, 32), (16, 256))
    samples = [
        {"prefill_tokens": p, "decode_tokens": d, "decode_context": d * c, "prefill_context": p * (p + 1) // 2,
         "seconds": STEP_SECONDS}
        for p, d, c in shapes if p + d
    ]  # fmt: skip
    (folder / "flat.json").write_text(json.dumps({"device": "test", "dtype": "bfloat16", "samples": samples}))
    (folder / "outputs.csv").write_text(f"prompt_tokens,output_tokens\n10,{SHORT}\n10,{LONG}\n")
    return folder / "flat.json"


@pytest.fixture(scope="module")
def url(profile):
    args = ["--emulate", str(profile), "--emulate-outputs", str(profile.parent / "outputs.csv"),
            "--truth-bias", str(BIAS), "--max-batch-total-tokens", str(KV_TOKENS), "--grace-period", "0"]  # fmt: skip
    with running_server(args, timeout=120) as (_, address):
        yield address


def generate(url: str, max_new_tokens: int, ignore_eos: bool = False) -> dict:
    body = {"inputs": "Hello", "parameters": {"max_new_tokens": max_new_tokens, "ignore_eos": ignore_eos,
                                              "details": True}}  # fmt: skip
    answer = httpx.post(f"{url}/generate", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_streams_token_times_follow_the_truth_model(url, profile):
    body = {"inputs": "Tell me a story.", "parameters": {"max_new_tokens": 16, "ignore_eos": True}}
    arrivals, text = [], ""
    with httpx.stream("POST", f"{url}/generate_stream", json=body, timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                arrivals.append(time.perf_counter())
                text += json.loads(line.removeprefix("data:"))["token"]["text"]
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    truth = LatencyPredictor.load(str(profile)).predict_parts(0, 1, 20, 0) * BIAS
    assert len(arrivals) == 16
    assert statistics.median(gaps) == pytest.approx(truth, rel=0.10)  # the truth, not the nominal 80 ms
    assert "filler text" in text  # ordinary text of the served tokenizer


def test_b_kv_blocks_are_freed_after_requests_finish(url):
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: generate(url, 30, ignore_eos=True), range(8)))
    assert all(a["details"]["generated_tokens"] == 30 for a in answers)
    series = parse(httpx.get(f"{url}/metrics", timeout=10).text)
    assert series["niyama_kv_blocks_total"] == KV_TOKENS // 16
    assert series["niyama_kv_blocks_free"] == series["niyama_kv_blocks_total"]


def test_c_info_says_emulated_with_its_settings(url, profile):
    info = httpx.get(f"{url}/info", timeout=10).json()
    assert info["emulated"] == {
        "device": "emulated flat", "latency_model": str(profile), "truth": {"noise": 0.0, "bias": BIAS},
        "kv_tokens": KV_TOKENS, "outputs": str(profile.parent / "outputs.csv"), "seed": 0,
    }  # fmt: skip
    assert info["workers"][0]["where"].startswith("emulated flat")


def test_d_without_ignore_eos_output_lengths_come_from_the_trace(url):
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: generate(url, LONG - 1), range(12)))
    endings = {(a["details"]["finish_reason"], a["details"]["generated_tokens"]) for a in answers}
    assert endings == {("eos_token", SHORT), ("length", LONG - 1)}  # a long draw is cut at max_new_tokens
    assert all(generate(url, LONG - 1, ignore_eos=True)["details"]["finish_reason"] == "length" for _ in range(3))


def test_e_truth_flags_without_emulate_are_refused(capsys):
    assert serve.main(["--truth-noise", "0.1"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--truth-noise/--truth-bias" in error and "--emulate" in error


def test_f_the_emulated_worker_imports_no_torch(url):
    code = "import sys, niyama.worker.emulated; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
    maps = Path(f"/proc/{httpx.get(f'{url}/info', timeout=10).json()['workers'][0]['pid']}/maps")
    if maps.exists():  # Linux: the running worker itself, after serving requests
        assert "libtorch" not in maps.read_text()


def test_g_a_host_that_wakes_the_worker_late_does_not_slow_the_emulated_device():
    """Each sleep overruns by 4 ms (a busy host); over 40 steps of 10 ms the device still keeps the truth's pace."""
    from niyama.qos.plan import Chunk, Plan, StepShape
    from niyama.worker.emulated import EmulatedWorker, Vocabulary

    def late_sleep(seconds: float) -> None:
        time.sleep(seconds + 0.004)

    worker = EmulatedWorker(lambda *shape: 0.010, Vocabulary(100, frozenset({0}), (5, 6), 512), (1000,), sleep=late_sleep)
    worker.add_sequence("r", (1, 2, 3), None)
    chunk = Chunk("r", 3, 1, True, True)
    plan = Plan((chunk,), shape=StepShape.of((chunk,)))
    started = time.perf_counter()
    elapsed = [worker.execute(plan).seconds for _ in range(40)]
    total = time.perf_counter() - started
    assert total == pytest.approx(0.400, abs=0.012)  # without the catch-up: 40 x 14 ms = 0.56 s
    assert statistics.median(elapsed) < 0.012
