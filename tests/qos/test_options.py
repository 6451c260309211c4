"""One run configuration: the same options in `niyama serve` and `niyama simulate`, run files, messages."""

from __future__ import annotations

import argparse
import json

import pytest

from niyama.engine import simulate_cli
from niyama.qos.deadlines import BATCH_SECONDS_PER_TOKEN
from niyama.qos.errors import QosConfigError
from niyama.qos.options import FLAGS, CacheConfig, RunConfig, add_run_options, run_config
from niyama.qos.policy import CHUNK_SIZES, KNOBS, PolicyConfig, policy_config
from niyama.router.serve import parser as serve_parser

TIER_FILE = '[[tiers]]\nname = "only"\nkind = "batch"\nttlt = "1h"\n'


def option_strings(parser: argparse.ArgumentParser) -> dict[str, str]:
    return {flag: action.dest for action in parser._actions for flag in action.option_strings}


def parse(command: str, *argv: str) -> argparse.Namespace:
    parser = serve_parser() if command == "serve" else simulate_cli.build_parser()
    return parser.parse_args(list(argv))


def test_serve_and_simulate_accept_the_same_scheduling_options():
    reference = argparse.ArgumentParser()
    add_run_options(reference)
    shared = option_strings(reference)
    serve, simulate = option_strings(serve_parser()), option_strings(simulate_cli.build_parser())
    assert shared.items() <= serve.items() and shared.items() <= simulate.items()
    for knob in KNOBS:  # every PolicyConfig knob has a flag of its own name
        assert "--" + knob.replace("_", "-") in shared
    for flag in ("--policy", "--without", "--kv-tokens", "--block-size", "--routing", "--latency-model", "--replicas",
                 "--tiers", "--config", "--save-config", "--qos-config", "--max-batch-prefill-tokens",
                 "--max-batch-total-tokens", "--latency-profile"):  # fmt: skip
        assert flag in shared
    argv = ("--policy", "edf", "--token-budget", "512", "--kv-tokens", "9000", "--latency-model", "a100-llama3-8b",
            "--tiers", "paper", "--no-relegation", "--max-running", "64")  # fmt: skip
    assert run_config(parse("serve", *argv), "serve") == run_config(parse("simulate", *argv), "simulate")


def test_command_defaults():
    simulate = run_config(parse("simulate"), "simulate")
    assert simulate == RunConfig(tiers="paper", cache=CacheConfig(kv_tokens=400_000), latency_model="a100-llama3-8b")
    assert simulate.policy == policy_config("niyama") and simulate.routing == "slack"
    serve = run_config(parse("serve"), "serve", max_concurrent_requests=128)
    assert serve.tiers == "default" and serve.cache.kv_tokens is None and serve.latency_model is None
    assert serve.policy == policy_config("niyama", max_running=128)  # bounded by the server's concurrency
    assert run_config(parse("serve", "--max-running", "32"), "serve", 128).policy.max_running == 32
    assert run_config(parse("serve", "--max-running", "none"), "serve", 128).policy.max_running is None
    with pytest.raises(
        QosConfigError, match=r"^--max-running cannot exceed --max-concurrent-requests \(128\), got 300$"
    ):
        run_config(parse("serve", "--max-running", "300"), "serve", 128)


def test_flags_set_every_knob():
    args = parse("simulate", "--policy", "fcfs", "--without", "relegation", "--dynamic-chunking", "--chunk-sizes",
                 "64,128", "--alpha", "0.01", "--no-adaptive-alpha", "--ordering", "deadline",
                 "--batch-seconds-per-token", "0.2", "--initial-prefill-rate", "5000")  # fmt: skip
    policy = run_config(args).policy
    assert policy == policy_config("fcfs", relegation=False, dynamic_chunking=True, chunk_sizes=(64, 128), alpha=0.01,
                                   adaptive_alpha=False, ordering="deadline", batch_seconds_per_token=0.2,
                                   initial_prefill_rate=5000.0)  # fmt: skip


def test_max_batch_prefill_tokens_caps_every_step():
    policy = run_config(parse("serve", "--max-batch-prefill-tokens", "1000"), "serve").policy
    assert policy.token_budget == 1000 and policy.chunk_sizes == tuple(s for s in CHUNK_SIZES if s <= 1000)
    policy = run_config(parse("serve", "--max-batch-prefill-tokens", "100"), "serve").policy
    assert policy.token_budget == 100 and policy.chunk_sizes == (100,)
    args = parse("serve", "--max-batch-prefill-tokens", "300", "--chunk-sizes", "64,256,512")
    assert run_config(args, "serve").policy.chunk_sizes == (64, 256, 512)  # explicit sizes are kept
    config = run_config(parse("serve", "--max-batch-total-tokens", "4096", "--qos-config", "paper"), "serve")
    assert config.cache.kv_tokens == 4096 and config.tiers == "paper"


def test_save_and_replay_give_the_same_configuration(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiers").mkdir()
    (tmp_path / "tiers" / "mine.toml").write_text(TIER_FILE)
    (tmp_path / "runs").mkdir()
    argv = ("--tiers", "tiers/mine.toml", "--policy", "edf", "--token-budget", "384", "--dynamic-chunking",
            "--max-running", "none", "--kv-tokens", "12345", "--block-size", "32", "--routing", "round-robin",
            "--replicas", "3", "--safety-margin", "1.5", "--save-config", "runs/run.toml")  # fmt: skip
    saved = run_config(parse("simulate", *argv))
    text = (tmp_path / "runs" / "run.toml").read_text()
    assert 'tiers = "../tiers/mine.toml"' in text and "token_budget = 384" in text and 'max_running = "none"' in text
    assert "relegation" not in text  # only the knobs that differ from the preset
    assert run_config(parse("simulate", "--config", "runs/run.toml")) == saved
    monkeypatch.chdir(tmp_path / "runs")  # relative paths in a run file count from its folder
    replayed = run_config(parse("simulate", "--config", "run.toml"))
    assert replayed.tiers == "../tiers/mine.toml" and replayed.tier_config().names == ("only",)
    assert replayed.model_copy(update={"tiers": saved.tiers}) == saved
    assert RunConfig.load("run.toml") == replayed
    # serve replays it as is; a file that names no cache size or latency model leaves them to the device
    assert (
        run_config(parse("serve", "--config", "run.toml"), "serve").model_copy(update={"tiers": saved.tiers}) == saved
    )


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('tiers = "default"\n[policy]\nname = "edf"\ntoken_budget = 512\n[cache]\nkv_tokens = 1000\n')
    config = run_config(parse("simulate", "--config", str(path)))
    assert config.policy == policy_config("edf", token_budget=512) and config.cache.kv_tokens == 1000
    assert config.latency_model == "a100-llama3-8b"  # not in the file: the command's default
    config = run_config(parse("simulate", "--config", str(path), "--token-budget", "128", "--kv-tokens", "2000"))
    assert config.policy == policy_config("edf", token_budget=128) and config.cache.kv_tokens == 2000
    config = run_config(parse("simulate", "--config", str(path), "--policy", "niyama", "--without", "relegation"))
    assert config.policy == policy_config("niyama", token_budget=512, relegation=False)


def test_effective_configuration_is_json():
    config = run_config(parse("serve", "--policy", "fcfs"), "serve", max_concurrent_requests=64)
    info = json.loads(json.dumps(config.as_dict()))
    assert set(info) == {"tiers", "policy", "cache", "truth", "routing", "latency_model", "replicas"}
    assert set(info["policy"]) == {"name", *KNOBS} and info["policy"]["max_running"] == 64
    assert info["policy"]["chunk_sizes"] == list(CHUNK_SIZES) and info["cache"] == {"kv_tokens": None, "block_size": 16}
    assert config.policy_config() is config.policy


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--token-budget", "0"], "--token-budget must be at least 1, got 0"),
        (["--token-budget", "1.5"], "--token-budget must be an integer, got 1.5"),
        (["--kv-tokens", "0"], "--kv-tokens must be at least 1, got 0"),
        (["--max-batch-total-tokens", "-5"], "--kv-tokens must be at least 1, got -5"),
        (["--block-size", "x"], "--block-size must be an integer, got 'x'"),
        (["--replicas", "0"], "--replicas must be at least 1, got 0"),
        (["--arrival-guard", "2"], "--arrival-guard must be within [0, 1], got 2.0"),
        (["--chunk-sizes", "256,128"], "--chunk-sizes must be increasing positive integers, got (256, 128)"),
        (["--chunk-sizes", "a,b"], "--chunk-sizes must be comma-separated integers, got 'a,b'"),
        (["--ordering", "random"], "--ordering must be 'arrival' or 'deadline', got 'random'"),
        (["--safety-margin", "0"], "--safety-margin must be greater than 0, got 0"),
        (["--max-running", "many"], "--max-running must be an integer, got 'many'"),
        (["--policy", "lifo"], "--policy unknown policy 'lifo'; choose from fcfs, edf, niyama"),
        (["--without", "magic"], "--without: unknown mechanism 'magic'; choose from dynamic-chunking"),
        (["--relegation", "--without", "relegation"], "--relegation contradicts --without relegation"),
        (["--token-budget", "8", "--max-batch-prefill-tokens", "8"], "give --token-budget or --max-batch-prefill"),
        (["--max-batch-prefill-tokens", "0"], "--max-batch-prefill-tokens must be a positive integer, got 0"),
        (["--config", "nowhere.toml"], "nowhere.toml: cannot read run file"),
        (["--routing", "random"], "argument --routing: invalid choice: 'random'"),
    ],
)
def test_bad_values_are_one_line_and_exit_2(capsys, argv, message):
    code = simulate_cli.main(["--duration", "10", *argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"niyama simulate: error: {message}")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[policy]\ntoken_budget = 0\n", "field 'policy.token_budget': must be at least 1, got 0"),
        ("[policy]\nbudget = 3\n", "unknown field 'policy.budget'"),
        ("[cache]\nkv_tokens = 'lots'\n", "field 'cache.kv_tokens': must be an integer, got 'lots'"),
        ("replicas = 0\n", "field 'replicas': must be at least 1, got 0"),
        ("routing = 'random'\n", "field 'routing': must be 'slack' or 'round-robin', got 'random'"),
        ("policy = 'edf'\n", "field 'policy': expected a [policy] table"),
        ("[policy]\nname = 'lifo'\n", "field 'policy.name': unknown policy 'lifo'"),
        ("tiers = [[[\n", "not valid TOML"),
    ],
)
def test_bad_run_files_name_the_file_and_field(tmp_path, text, message):
    path = tmp_path / "run.toml"
    path.write_text(text)
    with pytest.raises(QosConfigError) as info:
        run_config(parse("simulate", "--config", str(path)))
    assert str(info.value).startswith(f"{path}: {message}") and "\n" not in str(info.value)


def test_python_api_errors_are_one_line():
    with pytest.raises(ValueError, match=r"^replicas must be at least 1, got 0$"):
        RunConfig(replicas=0)
    with pytest.raises(ValueError, match=r"^unknown run option 'cash'"):
        RunConfig(cash=1)
    with pytest.raises(ValueError, match=r"^token budget must be at least 1, got 0$"):
        PolicyConfig(name="edf", token_budget=0)


def test_policy_config_is_a_frozen_model_with_one_batch_pace():
    config = policy_config("niyama")
    assert config.batch_seconds_per_token == BATCH_SECONDS_PER_TOKEN
    with pytest.raises(ValueError):
        config.token_budget = 3
    assert PolicyConfig(name="custom").ordering == "deadline" and hash(config) == hash(policy_config("niyama"))
    assert set(FLAGS) >= {f"policy.{knob}" for knob in KNOBS}


def test_simulate_replays_a_saved_run(tmp_path, capsys):
    path = tmp_path / "run.toml"
    argv = ["--trace", "sharegpt", "--rate", "2", "--duration", "30", "--json"]
    assert simulate_cli.main([*argv, "--policy", "edf", "--token-budget", "512", "--save-config", str(path)]) == 0
    first = json.loads(capsys.readouterr().out)
    assert simulate_cli.main([*argv, "--config", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == first
    assert first["config"]["policy"]["name"] == "edf" and first["config"]["policy"]["token_budget"] == 512
