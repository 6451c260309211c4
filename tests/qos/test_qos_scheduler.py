"""The scheduler core: the chunk contract, ordering per policy, admission, memory, lifecycle."""

from __future__ import annotations

import pytest
from conftest import Driver, spans

from niyama.qos.errors import (
    AdmissionError,
    DuplicateRequestError,
    RequestTooLargeError,
    SloOverrideError,
    UnknownTierError,
)
from niyama.qos.plan import StepResult, StepShape
from niyama.qos.policy import policy_config


def test_fcfs_orders_by_arrival_across_tiers():
    d = Driver("fcfs")
    d.add("A", "Q3", 0.0, 100)
    d.add("B", "Q1", 1.0, 100)
    d.add("C", "Q2", 2.0, 100)
    plan = d.scheduler.schedule(3.0)
    assert spans(plan) == [("A", 0, 100, True, False), ("B", 0, 100, True, False), ("C", 0, 56, False, False)]


def test_edf_orders_by_first_token_deadline():
    # deadlines: B (Q1) 1 + 6 = 7; C (Q2) 2 + 600 - 15 * 0.4 = 596; A (Q3) 0 + 1800 - 6 = 1794
    d = Driver("edf")
    d.add("A", "Q3", 0.0, 100)
    d.add("B", "Q1", 1.0, 100)
    d.add("C", "Q2", 2.0, 100)
    plan = d.scheduler.schedule(3.0)
    assert spans(plan) == [("B", 0, 100, True, False), ("C", 0, 100, True, False), ("A", 0, 56, False, False)]


def test_edf_honours_tightened_targets():
    d = Driver("edf")
    d.add("loose", "Q1", 0.0, 200)
    d.add("tight", "Q1", 1.0, 200, ttft=2.0)  # due at 3 s, before loose's 6 s
    assert [c.request_id for c in d.scheduler.schedule(1.0).chunks] == ["tight", "loose"]


def test_niyama_hybrid_priority_prefers_short_work():
    # fixed alpha 8 ms/token: X 6 + 0.008 * 2000 = 22; Y 7 + 0.008 * 100 = 7.8; Z 594 + 0.4 = 594.4
    d = Driver("niyama", adaptive_alpha=False)
    d.add("X", "Q1", 0.0, 2000)
    d.add("Y", "Q1", 1.0, 100)
    d.add("Z", "Q2", 0.0, 50)
    plan = d.scheduler.schedule(1.0)
    assert spans(plan) == [("Y", 0, 100, True, False), ("X", 0, 2000, True, False), ("Z", 0, 50, True, False)]
    assert d.scheduler.stats().alpha == 0.008
    # the same requests under EDF: X (6) before Y (7)
    e = Driver("edf", token_budget=4096)
    e.add("X", "Q1", 0.0, 2000)
    e.add("Y", "Q1", 1.0, 100)
    e.add("Z", "Q2", 0.0, 50)
    assert [c.request_id for c in e.scheduler.schedule(1.0).chunks] == ["X", "Y", "Z"]


def test_chunk_contract_prefill_then_decodes_then_release():
    d = Driver("edf")
    d.add("q", "Q1", 0.0, 300, new=3)
    plan, done = d.step(0.0)
    assert spans(plan) == [("q", 0, 256, False, False)] and done == []
    assert len(plan.block_tables["q"]) == 16  # 256 / 16
    plan, done = d.step(0.1)
    assert spans(plan) == [("q", 256, 44, True, False)] and done == []
    assert len(plan.block_tables["q"]) == 19  # ceil(300 / 16)
    plan, done = d.step(0.2)
    assert spans(plan) == [("q", 300, 1, True, True)] and done == []
    assert plan.block_tables["q"][:16] == tuple(range(16))
    plan, done = d.step(0.3)
    assert spans(plan) == [("q", 301, 1, True, True)]
    assert done == ["q"]
    assert d.allocator.num_free == d.allocator.num_blocks
    assert d.scheduler.schedule(0.4).is_empty


def test_plan_shape_and_prediction():
    d = Driver("edf")
    d.add("a", "Q1", 0.0, 10, new=5)
    d.step(0.0)
    d.add("b", "Q2", 0.1, 400)
    plan = d.scheduler.schedule(0.1)
    # a decodes position 10 (context 11); b prefills 255 tokens (256 - 1 decode)
    assert spans(plan) == [("a", 10, 1, True, True), ("b", 0, 255, False, False)]
    assert plan.shape == StepShape.of(plan.chunks) == StepShape(255, 1, 11, 255)
    assert plan.predicted_seconds == d.predictor.predict(plan.shape)


def test_decodes_come_first_and_shrink_the_fixed_budget():
    d = Driver("fcfs")
    d.add("a", "Q1", 0.0, 10)
    d.add("b", "Q1", 0.0, 10)
    d.step(0.0)
    d.add("c", "Q1", 0.1, 1000)
    plan = d.scheduler.schedule(0.1)
    assert spans(plan) == [("a", 10, 1, True, True), ("b", 10, 1, True, True), ("c", 0, 254, False, False)]


def test_partial_prefill_continues_before_new_requests_without_selective_preemption():
    d = Driver("edf")
    d.add("p", "Q3", 0.0, 1000)
    d.step(0.0)
    d.add("n", "Q1", 1.0, 100)
    assert spans(d.scheduler.schedule(1.0)) == [("p", 256, 256, False, False)]


def test_finish_during_step_is_ignored_and_idempotent():
    d = Driver("edf")
    d.add("a", "Q1", 0.0, 100, new=1)
    d.add("b", "Q1", 0.0, 100, new=1)
    plan = d.scheduler.schedule(0.0)
    assert [c.request_id for c in plan.chunks] == ["a", "b"]
    d.scheduler.finish("a")  # client went away mid-step
    assert d.scheduler.on_step(StepResult((), 0.05), 0.05) == ["b"]
    assert d.allocator.num_free == d.allocator.num_blocks
    d.scheduler.finish("a")
    d.scheduler.finish("never-seen")
    assert d.scheduler.stats().queued == 0


def test_finish_queued_request():
    d = Driver("edf")
    d.add("a", "Q2", 0.0, 100)
    d.scheduler.finish("a")
    assert d.scheduler.schedule(0.0).is_empty
    assert d.scheduler.stats().tiers["Q2"].queued == 0


def test_schedule_again_discards_the_previous_plan():
    d = Driver("edf")
    d.add("a", "Q1", 0.0, 300)
    first = d.scheduler.schedule(0.0)
    second = d.scheduler.schedule(0.0)  # e.g. the worker failed: the step is redone
    assert spans(first) == spans(second) == [("a", 0, 256, False, False)]
    assert d.scheduler.on_step(StepResult((), 0.05), 0.05) == []
    assert spans(d.scheduler.schedule(0.1)) == [("a", 256, 44, True, False)]
    assert d.scheduler.on_step(StepResult((), 0.05), 0.15) == []
    assert d.scheduler.on_step(StepResult((), 0.05), 0.2) == []  # no plan outstanding


def test_admission_errors():
    d = Driver("edf", blocks=10, block_size=16)  # 160 tokens of KV
    d.add("fits", "Q1", 0.0, 100, new=60)
    with pytest.raises(RequestTooLargeError) as info:
        d.add("big", "Q1", 0.0, 100, new=61)
    assert str(info.value) == (
        "request 'big' needs 161 tokens of KV cache (prompt 100 + max new tokens 61) but the cache holds 160"
    )
    with pytest.raises(DuplicateRequestError):
        d.add("fits", "Q1", 0.0, 10)
    with pytest.raises(UnknownTierError):
        d.add("x", "gold", 0.0, 10)
    with pytest.raises(SloOverrideError):
        d.add("y", "Q1", 0.0, 10, ttft=60.0)
    with pytest.raises(AdmissionError, match="must be at least 1"):
        d.add("z", "Q1", 0.0, 0)
    for error in (RequestTooLargeError, DuplicateRequestError, UnknownTierError, SloOverrideError):
        assert issubclass(error, AdmissionError) and issubclass(error, ValueError)


def test_admission_keeps_room_for_started_requests():
    # 20 blocks of 16 tokens, watermark ceil(1% of 20) = 1 block. After a's first chunk (16
    # blocks) 4 are free, 3 of them still owed to a's 300-token prompt: b (7 blocks) waits.
    d = Driver("edf", blocks=20, block_size=16)
    d.add("a", "Q1", 0.0, 300, new=4)
    d.add("b", "Q1", 0.5, 100, new=4)
    plan, _ = d.step(0.0)
    assert spans(plan) == [("a", 0, 256, False, False)]
    plan, _ = d.step(0.1)
    assert spans(plan) == [("a", 256, 44, True, False)]
    assert d.allocator.num_free == 1
    assert d.scheduler.stats().tiers["Q1"].queued == 1


def test_max_running_limits_admissions():
    d = Driver("edf", max_running=2)
    for rid in "abc":
        d.add(rid, "Q1", 0.0, 10)
    assert [c.request_id for c in d.scheduler.schedule(0.0).chunks] == ["a", "b"]


def test_stats_per_tier():
    d = Driver("edf")
    d.add("a", "Q1", 0.0, 10)
    d.add("b", "Q2", 0.0, 300)
    d.add("c", "Q3", 0.0, 300)
    d.step(0.0)  # a: 10 tokens, b: 246 tokens
    stats = d.scheduler.stats()
    assert stats.policy == "edf"
    assert (stats.running, stats.prefilling, stats.queued) == (1, 1, 1)
    assert stats.tiers["Q1"].running == 1 and stats.tiers["Q2"].prefilling == 1 and stats.tiers["Q3"].queued == 1
    assert stats.free_blocks == stats.total_blocks - 1 - 16  # ceil(10/16) + ceil(246/16)
    assert stats.block_size == 16 and stats.steps == 1 and stats.relegated == 0
    # one observed step of shape (256, 0, 0, 256) that took 0.05 s
    reference = Driver("edf").predictor.predict(StepShape(256, 0, 0, 256))
    assert stats.predictor_error == pytest.approx(abs(reference - 0.05) / 0.05)


def test_policy_presets_and_options():
    assert policy_config("fcfs").ordering == "arrival"
    niyama = policy_config("niyama", relegation=False)
    assert niyama.dynamic_chunking and niyama.hybrid_priority and not niyama.relegation
    assert not policy_config("edf").dynamic_chunking
    with pytest.raises(ValueError, match="unknown policy 'sjf'; choose from fcfs, edf, niyama"):
        policy_config("sjf")
    with pytest.raises(ValueError, match="unknown policy option 'budget'"):
        policy_config("edf", budget=3)
    with pytest.raises(ValueError, match="token budget must be at least 1"):
        policy_config("edf", token_budget=0)
