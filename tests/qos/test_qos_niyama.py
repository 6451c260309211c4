"""Niyama's mechanisms one by one, with hand-computed expectations."""

from __future__ import annotations

import pytest
from conftest import Driver, spans

from niyama.qos.chunking import dynamic_step_tokens
from niyama.qos.load import LoadTracker
from niyama.qos.policy import CHUNK_SIZES
from niyama.qos.predictor import LatencyPredictor
from niyama.qos.relegation import choose_relegations
from niyama.qos.request import Request
from niyama.qos.state import RequestState
from niyama.qos.tiers import SloTargets

PREDICT = LatencyPredictor.reference("a100-llama3-8b").predict_parts

# Reference model, 10 decodes with summed context 5000, one fresh prefill chunk of T - 10 tokens,
# predicted seconds x 1.2: T=512 -> 0.06916, T=640 -> 0.08133, T=2048 -> 0.24784, T=2552 -> 0.30744.


@pytest.mark.parametrize(
    ("slack", "cap", "expected"),
    [
        (0.07, None, 512),  # 512 fits (0.0692), 640 does not (0.0813)
        (0.0813, None, 512),
        (0.0814, None, 640),
        (0.30, None, 2048),  # 2552 needs 0.3074
        (0.31, None, 2552),
        (None, None, 2552),  # no interactive decode: the largest step
        (None, 512, 512),  # low KV memory caps the step
        (-1.0, None, 128),  # already late: the smallest step
        (0.02, None, 128),  # nothing fits: still make progress
    ],
)
def test_dynamic_chunk_size_for_slack(slack, cap, expected):
    assert dynamic_step_tokens(PREDICT, CHUNK_SIZES, 1.2, slack, 10, 5000, 0, cap) == expected


def test_scheduler_sizes_the_step_from_the_most_urgent_decode():
    d = Driver("niyama")
    d.add("chat", "Q1", 0.0, 10, new=100)
    d.step(0.0, seconds=0.01)  # first token at 0.01: anchored at the 6 s deadline, token 2 due 6.05
    d.add("doc", "Q2", 1.0, 5000)
    plan = d.scheduler.schedule(5.98)  # slack 0.07 s: with 1 decode (context 11), 512 fits and 640 does not
    assert spans(plan) == [("chat", 10, 1, True, True), ("doc", 0, 511, False, False)]
    plan = d.scheduler.schedule(1.0)  # plenty of slack: the largest step
    assert spans(plan) == [("chat", 10, 1, True, True), ("doc", 0, 2551, False, False)]


def test_steps_leave_a_newly_arriving_request_time_to_start():
    # Guard 0.01 x Q1's 6 s TTFT = 0.06 s for a step. All-prefill steps on the reference model, x 1.2:
    # 384 tokens -> 0.0557 fits, 512 tokens -> 0.0683 does not.
    guarded = Driver("niyama", arrival_guard=0.01)
    guarded.add("doc", "Q2", 0.0, 5000)
    assert spans(guarded.scheduler.schedule(0.0)) == [("doc", 0, 384, False, False)]
    unguarded = Driver("niyama", arrival_guard=0.0)
    unguarded.add("doc", "Q2", 0.0, 5000)
    assert spans(unguarded.scheduler.schedule(0.0)) == [("doc", 0, 2552, False, False)]
    default = Driver("niyama")  # 0.25 x 6 s = 1.5 s: every size fits on the A100 reference model
    default.add("doc", "Q2", 0.0, 5000)
    assert spans(default.scheduler.schedule(0.0)) == [("doc", 0, 2552, False, False)]


def test_low_kv_memory_caps_dynamic_steps():
    d = Driver("niyama", blocks=1000, block_size=16)  # memory is low below 100 free blocks
    d.add("hog", "Q3", 0.0, 15_000, new=50)
    for now in range(6):
        d.step(float(now))  # 2552-token steps: the prompt's 938 blocks are taken by the sixth
    assert d.allocator.num_free == 62
    d.add("doc", "Q2", 10.0, 600)
    plan = d.scheduler.schedule(10.0)
    # no interactive decode, so the slack allows 2552 tokens; the cap makes it 512 with hog's decode
    assert spans(plan) == [("hog", 15_000, 1, True, True), ("doc", 0, 511, False, False)]


def _state(rid: str, rank: int, deadline: float, prompt: int, seq: int, started: bool = False) -> RequestState:
    targets = SloTargets(ttft=1.0, tbt=0.05)
    state = RequestState(Request(rid, "t", 0.0, prompt, 10), 0, rank, True, targets, deadline, 0.05, seq)
    if started:
        state.computed = 1
    return state


def test_relegation_sacrifices_the_least_important_request_ahead():
    # 1000 tokens/s. c (rank 0) finishes at 3 s <= 4; a (rank 2) would finish at 7 s > 6:
    # c, the least important walked so far, is relegated, and a then finishes at 4 s.
    c = _state("c", 0, 4.0, 3000, 0)
    a = _state("a", 2, 6.0, 4000, 1)
    assert choose_relegations([c, a], 0.0, 1000.0) == [c]


def test_relegation_never_sacrifices_a_more_important_request():
    # p (rank 2) is ahead; q (rank 0) would finish at 4 s > 3 s: only q itself may go.
    p = _state("p", 2, 2.0, 1000, 0)
    q = _state("q", 0, 3.0, 3000, 1)
    assert choose_relegations([p, q], 0.0, 1000.0) == [q]


def test_relegation_within_a_tier_takes_the_one_predicted_to_miss():
    x = _state("x", 1, 5.0, 3000, 0)
    y = _state("y", 1, 5.0, 3000, 1)
    z = _state("z", 1, 9.0, 1000, 2)
    # x by 3 s; y by 6 s > 5: y goes; z then by 4 s: fine.
    assert choose_relegations([x, y, z], 0.0, 1000.0) == [y]
    # with a 2500-token partial prefill ahead (started: counted, never relegated) x would
    # finish at 5.5 s > 5 and goes; so would y (2.5 + 3 = 5.5 s), and it goes too; z makes it
    partial = _state("p", 0, 100.0, 2500, 3, started=True)
    assert choose_relegations([partial, x, y, z], 0.0, 1000.0) == [x, y]


def test_relegation_leaves_started_requests_alone():
    started = _state("s", 0, 1.0, 3000, 0, started=True)
    assert choose_relegations([started], 0.0, 1000.0) == []


def test_scheduler_relegates_and_serves_relegated_from_leftovers():
    d = Driver("niyama", initial_prefill_rate=1000.0, prefill_rate_decay=1.0)
    d.add("c", "Q3", -1790.0, 3000, new=20)  # first-token deadline -1790 + 1800 - 15 * 0.4 = 4
    d.add("a", "Q1", 0.0, 4000)  # deadline 6
    plan, _ = d.step(0.0)
    assert spans(plan) == [("a", 0, 2552, False, False)]
    stats = d.scheduler.stats()
    assert stats.tiers["Q3"].relegated == 1 and stats.relegated_total == 1 and stats.tiers["Q1"].relegated == 0
    plan, _ = d.step(0.3)
    # a's remaining 1448 tokens first, the 1104 left over go to the relegated request
    assert spans(plan) == [("a", 2552, 1448, True, False), ("c", 0, 1104, False, False)]


def test_edf_without_relegation_serves_the_doomed_request_first():
    d = Driver("edf", token_budget=2552)
    d.add("c", "Q3", -1790.0, 3000, new=20)
    d.add("a", "Q1", 0.0, 4000)
    assert spans(d.scheduler.schedule(0.0)) == [("c", 0, 2552, False, False)]


@pytest.mark.parametrize(
    ("selective", "expected"),
    [
        (False, [("p", 256, 256, False, False)]),
        # p (Q3, due 1794) can wait: 1 + (256 + 744) / 1000 = 2 <= 1794
        (True, [("n", 0, 100, True, False), ("p", 256, 156, False, False)]),
    ],
)
def test_selective_preemption_of_a_partial_prefill(selective, expected):
    d = Driver("edf", selective_preemption=selective, initial_prefill_rate=1000.0, prefill_rate_decay=1.0)
    d.add("p", "Q3", 0.0, 1000)
    d.step(0.0)
    d.add("n", "Q1", 1.0, 100)
    assert spans(d.scheduler.schedule(1.0)) == expected


@pytest.mark.parametrize(
    ("rate", "first"),
    [
        (1000.0, "n"),  # p, due at 6 s, still makes it after waiting: 1 + 1000 / 1000 = 2 <= 6
        (100.0, "p"),  # it would not: 1 + 1000 / 100 = 11 > 6, so it keeps its place
    ],
)
def test_selective_preemption_only_when_it_costs_nothing(rate, first):
    d = Driver("edf", selective_preemption=True, initial_prefill_rate=rate, prefill_rate_decay=1.0)
    d.add("p", "Q1", 0.0, 1000)
    d.step(0.0)
    d.add("n", "Q1", 1.0, 100, ttft=1.0)  # due at 2 s, before p's 6 s
    assert d.scheduler.schedule(1.0).chunks[0].request_id == first


def _kv_pressure(importance_preemption: bool) -> Driver:
    # 6 blocks of 4 tokens. x (Q3) and y (Q1), 8-token prompts, each take 2 blocks; their first
    # decodes take one more each; at position 12 both need a fourth block and none is free.
    d = Driver("fcfs", blocks=6, block_size=4, importance_preemption=importance_preemption)
    d.add("x", "Q3", 0.0, 8, new=10)
    d.add("y", "Q1", 1.0, 8, new=10)
    for now in range(1, 6):
        plan, _ = d.step(float(now))
        assert plan.preempted == ()
    return d


def test_kv_pressure_preempts_the_most_recent_admission():
    d = _kv_pressure(False)
    plan, _ = d.step(6.0)
    assert plan.preempted == ("y",)
    assert spans(plan) == [("x", 12, 1, True, True)]
    assert d.scheduler.stats().tiers["Q1"].preempted_total == 1
    # x runs to completion; then y is recomputed: prompt + 5 generated tokens in one prefill that samples
    finished = []
    now = 7.0
    while "x" not in finished:
        plan, finished = d.step(now)
        now += 1
    plan, _ = d.step(now)
    assert spans(plan) == [("y", 0, 13, True, False)]
    plan, _ = d.step(now + 1)
    assert spans(plan) == [("y", 13, 1, True, True)]


def test_kv_pressure_with_importance_preempts_the_least_important():
    d = _kv_pressure(True)
    plan, _ = d.step(6.0)
    assert plan.preempted == ("x",)
    assert spans(plan) == [("y", 12, 1, True, True)]


def test_alpha_follows_saturation_with_hysteresis():
    load = LoadTracker(1000.0, 0.995, 0.008, 4, hybrid=True)
    assert load.alpha == 0.0
    # saturation after n saturated steps: 1 - 0.99 ** n; level 1 needs 4 * saturation >= 0.75,
    # i.e. n >= 21 (20 steps: 0.7282, 21 steps: 0.7616)
    changes = [load.observe(100, 0.1, True) for _ in range(21)]
    assert changes == [False] * 20 + [True]
    assert load.level == 1 and load.alpha == pytest.approx(0.002)
    # prefill rate: 0.995 * 1000 + 0.005 * 1000 stays 1000 for 100 tokens in 0.1 s
    assert load.prefill_rate == pytest.approx(1000.0)
    load.observe(300, 0.1, False)
    assert load.prefill_rate == pytest.approx(0.995 * 1000 + 0.005 * 3000)
    fixed = LoadTracker(1000.0, 0.995, 0.008, 4, hybrid=True, adaptive=False)
    assert fixed.alpha == 0.008 and not fixed.observe(0, 0.1, False)
    assert LoadTracker(1000.0, 0.995, 0.008, 4, hybrid=False).alpha == 0.0


@pytest.mark.parametrize(
    ("cap", "expected"),
    [
        # X: 6 + min(0.008 * 8000, 0.5 * 6) = 9 s; W (Q3, due 4): 4 + 0.8 = 4.8; V (Q2, due 10): 10.4
        (0.5, [("W", 0, 100, True, False), ("X", 0, 2452, False, False)]),
        # uncapped, X's 64 s penalty puts it behind requests due later than itself
        (1000.0, [("W", 0, 100, True, False), ("V", 0, 50, True, False), ("X", 0, 2402, False, False)]),
    ],
)
def test_hybrid_penalty_is_capped_by_the_requests_own_budget(cap, expected):
    d = Driver("niyama", adaptive_alpha=False, hybrid_cap=cap)
    d.add("X", "Q1", 0.0, 8000)
    d.add("W", "Q3", -1790.0, 100, new=20)  # first-token deadline -1790 + 1800 - 6 = 4
    d.add("V", "Q2", -584.0, 50, new=20)  # -584 + 600 - 6 = 10
    assert spans(d.scheduler.schedule(0.0)) == expected


def test_alpha_change_rekeys_the_queue():
    d = Driver("niyama")
    d.add("first", "Q1", 0.0, 2552, new=5)
    d.add("long", "Q1", 0.0, 8000)  # key 6, then 6 + min(0.008 * 8000, 0.5 * 6) = 9
    d.add("short", "Q1", 0.5, 100)  # key 6.5, then 6.5 + 0.008 * 100 = 7.3
    d.scheduler.load.saturation = 0.99  # as after a long overload: this saturated step moves alpha to the top
    plan, _ = d.step(0.0)
    assert spans(plan) == [("first", 0, 2552, True, False)]
    assert d.scheduler.stats().alpha == pytest.approx(0.008)
    plan = d.scheduler.schedule(0.1)
    assert spans(plan) == [("first", 2552, 1, True, True), ("short", 0, 100, True, False), ("long", 0, 2451, False, False)]
