"""Arrival processes, length scaling, tier mix and prompt texts of exact token lengths."""

from __future__ import annotations

import asyncio
import statistics

import pytest
from bench_fake import whitespace_spans

from niyama.bench.prompt_text import PromptBuilder
from niyama.bench.workload import BenchRequest, LengthScaling, build_requests, merge, parse_scaling, sim_requests
from niyama.qos.arrivals import ArrivalProcess, arrivals
from niyama.qos.config import builtin_tier_config
from niyama.qos.traces import Trace, load_trace
from niyama.qos.workload import RatePhase, build_workload

TIERS = builtin_tier_config("default")


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip([0.0, *times], times)]


@pytest.mark.parametrize(
    ("arrivals", "rate", "seed", "burstiness"),
    # `--arrivals poisson --rate 2 --seed 7`; a timed trace at its own rate; `--burstiness 0.5`
    [("poisson", 2.0, 7, 1.0), ("trace", None, 1, 1.0), ("gamma", 3.0, 2, 0.5)],
)
def test_bench_sends_exactly_what_the_simulator_replays(arrivals, rate, seed, burstiness):
    """`niyama bench serve` and `niyama simulate` with the same trace, tiers, mix, rate, duration and seed."""
    trace, paper = load_trace("azure-code"), builtin_tier_config("paper")
    phases = (RatePhase(rate or trace.native_rate, 300.0),)
    mix = (0.5, 0.3, 0.2)
    process = ArrivalProcess(arrivals, phases, burstiness)
    bench = build_requests(trace, paper, mix, process, 300.0, seed, LengthScaling())
    simulated = build_workload(trace, paper, mix, phases, 300.0, seed, arrivals != "trace", burstiness)
    assert len(simulated) > 300 and {r.tier for r in simulated} == set(paper.names)
    assert sim_requests(bench) == simulated  # id, tier, arrival time, prompt and output length, request by request
    assert [r.arrival for r in bench] == [r.arrival for r in simulated]


def test_trace_arrivals_keep_their_rows():
    trace = load_trace("azure-conv")
    phases = (RatePhase(1.0, 120.0),)
    ours = build_requests(trace, TIERS, (0.3, 0.7), ArrivalProcess("trace", phases), 120.0, 1, LengthScaling())
    assert [r.prompt_tokens for r in ours[:3]] == list(trace.prompt_lens[:3])


def test_gamma_keeps_the_mean_rate_and_burstiness_sets_the_spread():
    phases = (RatePhase(4.0, 1e9),)
    for shape, cv in ((0.25, 2.0), (1.0, 1.0), (16.0, 0.25)):
        times = [a.time for a in arrivals(ArrivalProcess("gamma", phases, shape), 1e9, 3, 10, max_requests=20_000)]
        spacing = gaps(times)
        assert statistics.fmean(spacing) == pytest.approx(0.25, rel=0.05)
        assert statistics.pstdev(spacing) / statistics.fmean(spacing) == pytest.approx(cv, rel=0.08)


def test_rate_schedules_switch_rates_and_repeat():
    phases = (RatePhase(1.0, 100.0), RatePhase(10.0, 100.0))
    times = [a.time for a in arrivals(ArrivalProcess("poisson", phases), 400.0, 0, 10)]
    slow = sum(1 for t in times if t % 200 < 100)
    fast = len(times) - slow
    assert 150 < slow < 260 and 1800 < fast < 2200


def test_trace_timestamps_are_scaled_to_the_rate():
    trace = Trace("t", (1, 2, 3, 4), (1, 1, 1, 1), (0.0, 1.0, 3.0, 4.0))  # native rate 0.75 req/s
    got = arrivals(ArrivalProcess("trace", (RatePhase(1.5, 100.0),)), 5.0, 0, 4, trace.times, max_requests=5)
    # Recorded gaps halved (0.75 -> 1.5 req/s); the wrap-around gap is the mean gap, 4/3 s, halved.
    assert [a.time for a in got] == pytest.approx([0.0, 0.5, 1.5, 2.0, 2.0 + 2 / 3])
    assert [a.row for a in got] == [0, 1, 2, 3, 0]
    with pytest.raises(ValueError, match="timestamps"):
        arrivals(ArrivalProcess("trace", (RatePhase(1.0, 1.0),)), 5.0, 0, 4, None)


def test_arrivals_are_bounded_by_duration_and_count():
    process = ArrivalProcess("poisson", (RatePhase(100.0, 10.0),))
    assert len(arrivals(process, 10.0, 0, 5, max_requests=37)) == 37
    assert all(a.time < 1.0 for a in arrivals(process, 1.0, 0, 5))
    with pytest.raises(ValueError, match="burstiness"):
        ArrivalProcess("gamma", (RatePhase(1.0, 1.0),), 0.0)


def test_length_scaling_rounds_caps_and_fits_the_context():
    assert LengthScaling(0.125, 0.125).apply(1155, 211) == (144, 26)
    assert LengthScaling(0.0625, 0.125).apply(1020, 131) == (64, 16)  # 63.75 and 16.375 round to nearest
    assert LengthScaling(0.125, 0.125).apply(3, 2) == (1, 1)
    assert LengthScaling(0.5, 1.0, max_prompt=300, max_output=64).apply(1000, 100) == (300, 64)
    assert LengthScaling(1.0, 1.0, max_total=1000).apply(990, 50) == (950, 50)
    assert LengthScaling(1.0, 1.0, max_total=100).apply(10, 500) == (1, 99)
    assert parse_scaling("0.125") == (0.125, 0.125) and parse_scaling("0.1,0.5") == (0.1, 0.5)
    for bad in ("x", "0", "1,2,3", "-1"):
        with pytest.raises(ValueError):
            parse_scaling(bad)


def test_the_mix_assigns_tiers_in_shares_and_merge_renumbers():
    trace = load_trace("sharegpt")
    process = ArrivalProcess("poisson", (RatePhase(50.0, 100.0),))
    requests = build_requests(trace, TIERS, (0.8, 0.2), process, 100.0, 0, LengthScaling(0.1))
    share = sum(r.tier == "interactive" for r in requests) / len(requests)
    assert share == pytest.approx(0.8, abs=0.03)
    flood = [BenchRequest(0, "batch", 0.5, 10, 10), BenchRequest(1, "batch", 0.05, 10, 10)]
    merged = merge(requests[:3], flood)
    assert [r.index for r in merged] == list(range(5))
    assert [r.arrival for r in merged] == sorted(r.arrival for r in merged)


def test_prompts_have_exact_token_counts_of_real_text():
    calls = []

    async def tokenize(text: str) -> list[tuple[int, int]]:
        calls.append(text)
        return [(0, 0)] + whitespace_spans(text)  # one added special token, like a BOS

    builder = PromptBuilder(tokenize, seed=0)

    async def go():
        return await builder.build_all([(0, 50), (1, 50), (2, 2), (0, 50), (3, 700), (4, 1)])

    prompts = asyncio.run(go())
    # One token is below what the tokenizer's own special token leaves room for: the closest, 2, is reported.
    assert [p.tokens for p in prompts] == [50, 50, 2, 50, 700, 2]
    assert all(len(whitespace_spans(p.text)) == p.tokens - 1 for p in prompts)
    assert prompts[0].text != prompts[1].text and prompts[0] == prompts[3]
    assert len(set(prompts[4].text.split())) > 200  # real text, not one repeated token
