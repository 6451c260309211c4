"""Routing across replicas: each replica's outlook on a request, the policies, and the cluster simulation."""

from __future__ import annotations

import json

import pytest

from niyama.engine import simulate_cli
from niyama.engine.simulator import SimSetup, simulate
from niyama.qos.config import builtin_tier_config
from niyama.qos.errors import RequestTooLargeError
from niyama.qos.kv_blocks import BlockAllocator
from niyama.qos.predictor import LatencyPredictor
from niyama.qos.request import Request
from niyama.qos.routing import Outlook, RoundRobin, SlackRouting, make_routing
from niyama.qos.scheduler import make_scheduler
from niyama.qos.traces import load_trace
from niyama.qos.workload import RatePhase, build_workload

DEFAULT = builtin_tier_config("default")  # interactive: TTFT 2 s; batch: TTLT 1 h
PAPER = builtin_tier_config("paper")


def scheduler(kv_tokens: int = 400_000):
    return make_scheduler(
        "niyama", DEFAULT, BlockAllocator(kv_tokens // 16, 16), LatencyPredictor.reference("a100-llama3-8b")
    )


def queue(target, tier: str, prompts: list[int]) -> None:
    for i, prompt in enumerate(prompts):
        target.add(Request(f"{tier}-{len(prompts)}-{i}", tier, 0.0, prompt, 10), 0.0)


def test_outlook_counts_only_the_work_served_before_the_request():
    replica = scheduler()
    queue(replica, "batch", [4000, 4000])
    queue(replica, "interactive", [500])
    urgent = replica.outlook(Request("new", "interactive", 0.0, 100, 10), 0.0)
    assert (urgent.deadline, urgent.work) == (2.0, 600)  # batch work is due later: not ahead of it
    patient = replica.outlook(Request("late", "batch", 0.0, 100, 10), 0.0)
    assert patient.work == 8600  # everything queued is due before a new batch request
    assert urgent.prefill_rate > 0 and urgent.slack(0.0) == pytest.approx(2.0 - 600 / urgent.prefill_rate)
    assert replica.stats().queued == 3  # looking changes nothing
    with pytest.raises(RequestTooLargeError):
        scheduler(kv_tokens=1024).outlook(Request("big", "interactive", 0.0, 2000, 10), 0.0)


def test_outlook_slack():
    assert Outlook(deadline=10.0, work=1000, prefill_rate=500.0).slack(now=4.0) == pytest.approx(4.0)


def test_round_robin_takes_turns():
    policy = RoundRobin()
    replicas = [scheduler() for _ in range(3)]
    request = Request("r", "interactive", 0.0, 10, 10)
    assert [policy.rank(replicas, request, 0.0) for _ in range(4)] == [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]


def test_slack_routing_sends_urgent_work_past_a_backlog_that_is_not_urgent():
    batch_heavy, interactive_busy = scheduler(), scheduler()
    queue(batch_heavy, "batch", [8000, 8000])
    queue(interactive_busy, "interactive", [3000])
    policy = make_routing("slack")
    pair = [batch_heavy, interactive_busy]
    assert policy.rank(pair, Request("i", "interactive", 0.0, 200, 10), 0.0)[0] == 0
    assert policy.rank(pair, Request("b", "batch", 0.0, 200, 10), 0.0)[0] == 1


def test_slack_routing_takes_turns_on_ties_and_ranks_refusing_replicas_last():
    policy = SlackRouting()
    idle = [scheduler(), scheduler()]
    request = Request("r", "interactive", 0.0, 100, 10)
    assert [policy.rank(idle, request, 0.0)[0] for _ in range(4)] == [0, 1, 0, 1]
    small, large = scheduler(kv_tokens=1024), scheduler()
    big = Request("big", "interactive", 0.0, 2000, 10)
    assert [policy.rank([small, large], big, 0.0) for _ in range(2)] == [[1, 0], [1, 0]]


def alternating(count: int, long: int, short: int) -> list[Request]:
    """Interactive requests, long and short prompts in turn, 0.25 s apart."""
    return [Request(f"r{i}", "Q1", i * 0.25, long if i % 2 == 0 else short, 8) for i in range(count)]


def test_cluster_simulation_round_robin_deals_in_turn_and_slack_balances_the_work():
    requests = alternating(240, 6000, 50)
    rr = simulate(SimSetup(PAPER, replicas=2, routing="round-robin"), requests)
    slack = simulate(SimSetup(PAPER, replicas=2, routing="slack"), requests)
    for result in (rr, slack):
        assert sum(len(r.outcomes) for r in result.tiers.values()) == len(requests)
    assert rr.routed == (120, 120)  # every long prompt lands on replica 0
    assert min(slack.routed) > 0
    # Round-robin overloads the replica that got every long prompt; slack routing shares them out.
    assert rr.misses > 0 and slack.misses < rr.misses


def test_one_replica_cluster_is_the_plain_simulation():
    requests = build_workload(load_trace("azure-conv"), PAPER, (1 / 3,) * 3, (RatePhase(3.0, 60),), 60.0, seed=1)
    one = simulate(SimSetup(PAPER), requests)
    for routing in ("slack", "round-robin"):
        same = simulate(SimSetup(PAPER, replicas=1, routing=routing), requests)
        assert (same.steps, same.tokens, same.end_time, same.misses) == (
            one.steps,
            one.tokens,
            one.end_time,
            one.misses,
        )


def test_cli_replicas_and_routing(capsys):
    argv = ["--trace", "sharegpt", "--rate", "6", "--duration", "30", "--replicas", "3", "--json"]
    assert simulate_cli.main([*argv, "--routing", "round-robin"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["config"]["replicas"] == 3 and result["config"]["routing"] == "round-robin"
    assert sum(result["routed"]) == result["requests"] and max(result["routed"]) - min(result["routed"]) <= 1
    assert simulate_cli.main(argv[:-1]) == 0
    assert "requests per replica (slack):" in capsys.readouterr().out
    assert simulate_cli.main([*argv, "--silo"]) == 2
    assert "--silo finds the number of replicas itself" in capsys.readouterr().err
