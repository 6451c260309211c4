"""Latency accounting: hand-computed TTFT, TBT, TTLT, misses and attainment per tier."""

from __future__ import annotations

import pytest

from niyama.bench.accounting import STOPPED_MISSED, STOPPED_UNDECIDED, certain_misses, certainly_missed, summarize
from niyama.bench.client import Record
from niyama.bench.workload import BenchRequest
from niyama.qos.config import parse_tier_config

TIERS = parse_tier_config(
    {
        "default": "chat",
        "tiers": [
            {"name": "chat", "kind": "interactive", "ttft": "1s", "tbt": "300ms"},
            {"name": "jobs", "kind": "batch", "ttlt": "10s"},
        ],
    },
    "test",
)


def record(tier: str, sent: float, times: list[float], error: str | None = None, asked: int = 4) -> Record:
    r = Record(BenchRequest(0, tier, 0.0, 8, asked), "http://x", 8, sent, list(times), None, "length", error, True)
    return r


RECORDS = [
    record("chat", 10.0, [10.5, 10.7, 11.1, 11.3]),  # ttft 0.5, gaps .2 .4 .2: on time (anchor 11.0)
    record("chat", 20.0, [21.5, 21.6]),  # ttft 1.5: misses TTFT
    record("chat", 30.0, [30.2, 31.0, 31.1, 31.2]),  # ttft 0.2; token 2 due 31.0 (anchor 31.0): ok
    record("chat", 40.0, [40.9, 41.0, 41.9, 42.0]),  # token 3 due 41.0 + 0.6 = 41.6: a TBT miss, not a miss
    record("jobs", 0.0, [3.0, 9.0]),  # ttlt 9: ok
    record("jobs", 0.0, [5.0, 12.0]),  # ttlt 12: misses
    record("jobs", 0.0, [1.0], error="HTTP 429: overloaded"),  # rejected: a miss
]


def test_per_tier_summary_is_hand_computed():
    summary = summarize(RECORDS, TIERS, wall_seconds=50.0)
    chat, jobs = summary["tiers"]["chat"], summary["tiers"]["jobs"]
    assert (chat["requests"], chat["completed"], chat["misses"]) == (4, 4, 1)
    assert chat["violation_pct"] == 25.0 and chat["attainment_pct"] == 75.0
    assert chat["tbt_violation_pct"] == 25.0
    assert chat["ttft"]["max"] == pytest.approx(1.5) and chat["ttft"]["p50"] == pytest.approx(0.7)
    # every gap: .2 .4 .2 | .1 | .8 .1 .1 | .1 .9 .1
    assert chat["tbt"]["max"] == pytest.approx(0.9) and chat["tbt"]["p50"] == pytest.approx(0.15)
    assert chat["ttlt"]["p50"] == pytest.approx(1.45)  # 1.2 1.3 1.6 2.0
    assert (jobs["requests"], jobs["completed"], jobs["rejected"], jobs["failed"], jobs["misses"]) == (3, 2, 1, 0, 2)
    assert jobs["ttlt"]["p50"] == pytest.approx(10.5) and jobs["errors"] == {"HTTP 429": 1}
    assert jobs["output_tokens_asked"] == 12 and jobs["output_tokens_received"] == 5
    assert summary["misses"] == 3 and summary["rejected"] == 1
    assert summary["violation_pct"] == pytest.approx(300 / 7, abs=1e-3)
    assert summary["completed"] == 6 and summary["throughput_rps"] == pytest.approx(6 / 50)
    assert summary["output_tokens_per_s"] == pytest.approx(18 / 50)


def test_certain_misses_while_requests_are_in_flight():
    chat, jobs = TIERS.tier("chat").targets, TIERS.tier("jobs").targets
    waiting = Record(BenchRequest(0, "chat", 0.0, 8, 4), "u", 8, sent=5.0)
    assert not certainly_missed(waiting, chat, now=5.9)
    assert certainly_missed(waiting, chat, now=6.1)  # no first token 1.1 s after sending
    waiting.token_times.append(5.8)
    assert not certainly_missed(waiting, chat, now=60.0)  # its first token was on time; TTLT is not its objective
    job = Record(BenchRequest(1, "jobs", 0.0, 8, 4), "u", 8, sent=0.0, token_times=[1.0])
    assert not certainly_missed(job, jobs, now=9.9) and certainly_missed(job, jobs, now=10.1)
    unsent = Record(BenchRequest(2, "jobs", 0.0, 8, 4), "u", 8)
    assert not certainly_missed(unsent, jobs, now=1e9)
    assert certain_misses(RECORDS, TIERS, now=1e9) == 3


def test_requests_cancelled_undecided_by_an_early_stop_are_left_out():
    stopped = [
        record("chat", 50.0, [], error=STOPPED_UNDECIDED),
        record("jobs", 0.0, [], error=STOPPED_MISSED),
    ]
    summary = summarize(RECORDS + stopped, TIERS, wall_seconds=50.0)
    assert summary["undecided"] == 1 and summary["requests"] == 8 and summary["misses"] == 4
    assert summary["tiers"]["chat"]["requests"] == 4 and summary["tiers"]["chat"]["undecided"] == 1
    assert summary["tiers"]["jobs"]["misses"] == 3
