"""`evaluate_qos.evaluate()` end to end: warm-up, repeated interleaved goodput searches and floods, the report.

Against small servers (the tiny random Llama with the real tokenizer, one per
system, each with the policy it stands for) and seconds-long probes, so the
whole evaluation runs in well under a minute; what it measures here says
nothing about the policies, only that every stage runs and reports.
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack

from router_server import ThreadedServer, one_replica, real_tokenizer, tiny_loaded, tiny_model
from support import make_runner

from niyama.bench.evaluate_qos import SHARED, TIERS_TOML, build_parser, evaluate
from niyama.bench.evaluate_report import write_report
from niyama.engine.replicas import ReplicaParts
from niyama.qos.config import load_tier_config
from niyama.qos.predictor import LatencyPredictor
from niyama.qos.scheduler import make_scheduler
from niyama.router.app import create_app
from niyama.router.settings import ServerSettings

TINY = ["--latency-profile", "unused.json", "--duration", "1.5", "--repeats", "2", "--max-probes", "1",
        "--start-rate", "4", "--warmup", "1", "--flood-seconds", "1.5", "--flood-interactive-rate", "4",
        "--flood-batch-requests", "3", "--flood-batch-window", "1", "--max-prompt-tokens", "48",
        "--max-output-tokens", "6", "--ttlt", "10", "--probe-gap", "0", "--seed", "1", "--no-progress"]  # fmt: skip


def server(policy: str, tiers) -> ThreadedServer:
    runner, allocator = make_runner(tiny_loaded(tiny_model(), max_context=1024), kv_tokens=4096, block_size=16)
    scheduler = make_scheduler(policy, tiers, allocator, LatencyPredictor.reference("a100-llama3-8b"))
    settings = ServerSettings(model_id="tiny-random-llama", max_input_tokens=512, max_total_tokens=1000)
    app = create_app(one_replica(ReplicaParts(scheduler, runner, frozenset())), real_tokenizer(), tiers, settings,
                     shutdown_grace_seconds=0.0)  # fmt: skip
    return ThreadedServer(app)


def test_evaluate_runs_every_stage_against_small_servers_and_reports(tmp_path):
    args = build_parser().parse_args(TINY)
    tiers_path = tmp_path / "tiers.toml"
    tiers_path.write_text(TIERS_TOML.format(ttft=args.ttft, tbt=args.tbt, ttlt=args.ttlt))
    tiers = load_tier_config(tiers_path)
    policies = {**{p: p for p in SHARED}, "silo-interactive": "edf", "silo-batch": "edf"}
    with ExitStack() as stack:
        servers = {name: stack.enter_context(server(policy, tiers)) for name, policy in policies.items()}
        results = asyncio.run(evaluate(args, servers, tiers_path))

    assert set(results["warmup"]) == {*SHARED, "silo"}
    assert [run["seed"] for run in results["runs"]] == [1, 2]  # seeds whose 1.5 s probes carry both tiers
    for run in results["runs"]:
        assert set(run["goodput"]) == {*SHARED, "silo"} and set(run["flood"]) == set(SHARED)
        for system, entry in run["goodput"].items():
            probes = entry["probes"]
            assert len(probes) == 1 and probes[0]["rate"] == 4.0
            assert all(p["server"]["steps"] > 0 for p in probes), system  # counters scraped from /metrics
            assert all(r["error"] is None and r["token_s"] for p in probes for r in p["records"]), system
            # both tiers in every probe; the silo sends each to its own server, a shared server takes both
            urls = {r["tier"]: r["url"] for p in probes for r in p["records"]}
            assert set(urls) == {"interactive", "batch"}
            assert (urls["interactive"] != urls["batch"]) == (system == "silo")
        for flood in run["flood"].values():
            assert 1 <= flood["summary"]["tiers"]["batch"]["requests"] <= 3  # the burst, at most its 3
            assert flood["summary"]["tiers"]["interactive"]["completed"] >= 1
    # the same seed gives every system the same requests; another seed other ones
    def prompts(run: dict, system: str) -> list[int]:
        return [r["prompt_tokens"] for r in run["goodput"][system]["probes"][0]["records"]]

    first, second = results["runs"]
    assert prompts(first, "niyama") == prompts(first, "fcfs") != prompts(second, "niyama")

    results["config"] = {"command": "test", "wall_seconds": 30.0, "cpu_count": 2, **vars(args)}
    write_report(results, tiers, tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert "## Run with seed 2" in summary and "- niyama / fcfs:" in summary
