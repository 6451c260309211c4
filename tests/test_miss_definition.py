"""One definition of a miss: /metrics, the bench and the simulator count the same requests the same way.

A tiny server whose every step is slowed to a quarter of a second serves
three tiers whose targets sit far from the times it achieves, so each
request's fate is certain: every ``tight`` request misses its 50 ms TTFT,
``loose`` and ``bulk`` requests meet theirs, and one ``bulk`` request can
never fit the KV cache (the server refuses it with 422, the simulator
rejects it). The bench sends the requests through its real client and
accounting; the server's /metrics and the simulator (the same arrivals and
lengths on a device as slow as the slowed worker) must agree with it tier by
tier. A second server adds what only a live server has: a failed step, 429
refusals beyond its concurrency limit and clients that leave.
"""

from __future__ import annotations

import asyncio

import pytest
from harden_support import HeldStream, PacedWorker, metric, settled, wait_until
from router_server import real_tokenizer, tiny_model, tiny_server
from support import make_runner, tiny_loaded

from niyama.bench.accounting import summarize
from niyama.bench.apis import TgiApi
from niyama.bench.client import TIER_HEADER, Target
from niyama.bench.prompt_text import Prompt
from niyama.bench.runner import run_requests
from niyama.bench.workload import BenchRequest
from niyama.engine.faults import FaultyWorker
from niyama.engine.replicas import ReplicaParts
from niyama.engine.report import summarize as summarize_simulation
from niyama.engine.simulator import SimSetup, simulate
from niyama.qos.config import parse_tier_config
from niyama.qos.options import TruthConfig
from niyama.qos.predictor import LatencyPredictor
from niyama.qos.request import Request
from niyama.qos.scheduler import make_scheduler
from niyama.qos.slo import is_miss

TIERS = parse_tier_config(
    {
        "default": "loose",
        "tiers": [
            {"name": "tight", "kind": "interactive", "ttft": "50ms", "tbt": "10s"},
            {"name": "loose", "kind": "interactive", "ttft": "30s", "tbt": "10s"},
            {"name": "bulk", "kind": "batch", "ttlt": "60s"},
        ],
    },
    "test",
)
STEP_SECONDS = 0.25  # each slowed step; five times the tight tier's TTFT, a hundred times below the others'
KV_TOKENS = 320
PROMPT = "Tell me about the sea"
TOO_LARGE = 400  # new tokens: more than the KV cache holds, ever


class SlowWorker(PacedWorker):
    seconds = STEP_SECONDS


def parts(worker) -> ReplicaParts:
    runner, allocator = make_runner(tiny_loaded(tiny_model(), max_context=1024), kv_tokens=KV_TOKENS, block_size=16)
    scheduler = make_scheduler("niyama", TIERS, allocator, LatencyPredictor.reference("a100-llama3-8b"))
    return ReplicaParts(scheduler, worker(runner), frozenset())


def bench(server, requests: list[BenchRequest]) -> dict:
    """Send ``requests`` with the bench's client and runner; its per-tier summary."""
    tokens = len(real_tokenizer().encode(PROMPT))
    target = Target(server.url, TgiApi())
    prompts = [Prompt(PROMPT, tokens)] * len(requests)
    run = asyncio.run(run_requests(requests, prompts, {t: target for t in TIERS.names}, TIERS, 60.0, 60.0))
    return summarize(run.records, TIERS, run.wall_seconds)["tiers"]


def served(server, name: str, tier: str, **labels: str) -> float:
    labels = {"tier": tier, **labels}
    return metric(server, name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}")


REQUESTS = [
    BenchRequest(0, "tight", 0.0, 0, 4),
    BenchRequest(1, "loose", 0.05, 0, 4),
    BenchRequest(2, "bulk", 0.1, 0, 4),
    BenchRequest(3, "tight", 0.4, 0, 4),
    BenchRequest(4, "loose", 0.45, 0, 4),
    BenchRequest(5, "bulk", 0.5, 0, TOO_LARGE),
    BenchRequest(6, "tight", 0.8, 0, 4),
    BenchRequest(7, "loose", 0.85, 0, 4),
]
EXPECTED_MISSES = {"tight": 3, "loose": 0, "bulk": 1}


def test_a_slowed_worker_misses_the_same_requests_in_metrics_the_bench_and_the_simulator():
    with tiny_server(TIERS, parts(SlowWorker)) as server:
        tiers = bench(server, REQUESTS)
        wait_until(lambda: settled(server))
        for tier, misses in EXPECTED_MISSES.items():
            assert tiers[tier]["misses"] == misses, (tier, tiers[tier])
            assert served(server, "niyama_slo_misses_total", tier) == misses, tier
            assert served(server, "niyama_slo_judged_total", tier) == tiers[tier]["requests"], tier
        assert served(server, "niyama_tier_rejected_total", "bulk", reason="too_large") == 1  # the bench saw a 422
        assert tiers["bulk"]["failed"] == 1 and served(server, "niyama_slo_met_total", "bulk") == 1
        assert metric(server, 'niyama_slo_attainment{tier="loose"}') == 1.0
        assert metric(server, 'niyama_slo_attainment{tier="tight"}') == 0.0
        assert metric(server, "niyama_schedule_seconds_count") >= 4  # one planning time per step

    prompt_len = len(real_tokenizer().encode(PROMPT))
    truth = TruthConfig(
        bias=STEP_SECONDS / LatencyPredictor.reference("a100-llama3-8b").predict_parts(prompt_len, 0, 0, 0)
    )
    setup = SimSetup(TIERS, kv_tokens=KV_TOKENS, truth=truth)
    requests = [Request(f"r{r.index}", r.tier, r.arrival, prompt_len, r.output_tokens) for r in REQUESTS]
    simulated = summarize_simulation(simulate(setup, requests))["tiers"]
    assert {tier: entry["misses"] for tier, entry in simulated.items()} == EXPECTED_MISSES
    assert simulated["bulk"]["rejected"] == 1


def test_a_failed_step_and_refusals_are_misses_and_a_client_that_leaves_is_judged_only_after_a_miss():
    worker = None

    def faulty(runner):
        nonlocal worker
        worker = FaultyWorker(SlowWorker(runner))
        return worker

    with tiny_server(TIERS, parts(faulty), max_concurrent_requests=3) as server:
        body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 50}}
        with HeldStream(server.url, body, {TIER_HEADER: "loose"}):  # leaves after its first token, on time
            pass
        with HeldStream(server.url, body, {TIER_HEADER: "tight"}):  # leaves after a first token already late
            pass
        wait_until(lambda: settled(server))
        assert served(server, "niyama_tier_requests_total", "loose", outcome="cancelled") == 1
        assert served(server, "niyama_slo_judged_total", "loose") == 0  # neither met nor missed
        assert served(server, "niyama_slo_misses_total", "tight") == 1  # it had missed before it left

        worker.fail_next()  # the first step of the burst fails: the requests it carried fail
        burst = [BenchRequest(i, tier, 0.0, 0, 4) for i, tier in enumerate(["tight", "loose", "bulk"] * 2)]
        tiers = bench(server, burst)  # six at once, three permits: the others refused with 429
        wait_until(lambda: settled(server))
        assert worker.injected == 1
        assert sum(entry["rejected"] for entry in tiers.values()) >= 1  # three unless a failed one's permit came back
        assert sum(entry["failed"] for entry in tiers.values()) >= 1
        for tier, entry in tiers.items():
            assert served(server, "niyama_tier_rejected_total", tier, reason="overloaded") == entry["rejected"], tier
            assert served(server, "niyama_tier_requests_total", tier, outcome="failed") == entry["failed"], tier
            before = 1 if tier == "tight" else 0  # the client that left late
            assert served(server, "niyama_slo_misses_total", tier) - before == entry["misses"], tier
            assert served(server, "niyama_slo_judged_total", tier) - before == entry["requests"], tier


@pytest.mark.parametrize(
    ("end", "violated", "judged"),
    [
        ("finished", False, False), ("finished", True, True), ("failed", False, True), ("rejected", False, True),
        ("cancelled", False, None), ("cancelled", True, True),
    ],
)  # fmt: skip
def test_the_rule(end, violated, judged):
    assert is_miss(end, violated) is judged
