"""Deadlines and SLO accounting, hand-computed."""

from __future__ import annotations

import pytest

from niyama.qos.deadlines import anchor, first_token_deadline, token_deadline, token_pace
from niyama.qos.slo import SloTracker, evaluate
from niyama.qos.tiers import SloTargets

CHAT = SloTargets(ttft=2.0, tbt=0.1)
JOB = SloTargets(ttlt=600.0)


def test_interactive_first_token_deadline_and_pace():
    assert first_token_deadline(10.0, CHAT, max_new_tokens=50) == 12.0
    assert token_pace(CHAT) == 0.1


def test_batch_first_token_deadline_reserves_decode_time():
    # 15 tokens x 0.4 s when the output length is unknown
    assert first_token_deadline(100.0, JOB, max_new_tokens=50) == pytest.approx(694.0)
    # the tier's expected output, capped by max_new_tokens: min(100, 50) x 0.4 = 20 s
    assert first_token_deadline(100.0, JOB, 50, expected_output_tokens=100) == pytest.approx(680.0)
    # a short request needs less: 5 x 0.4 = 2 s
    assert first_token_deadline(100.0, JOB, 5) == pytest.approx(698.0)
    assert first_token_deadline(100.0, JOB, 50, seconds_per_token=1.0) == pytest.approx(685.0)
    assert token_pace(JOB) == 0.4


def test_token_deadlines_with_reanchoring():
    # on time: token n due at arrival + ttft + (n - 1) * tbt
    on_time = anchor(12.0, 11.0)
    assert on_time == 12.0
    assert token_deadline(on_time, 1, 0.1) == 12.0
    assert token_deadline(on_time, 4, 0.1) == pytest.approx(12.3)
    # first token late (13 s): later tokens count from it
    late = anchor(12.0, 13.0)
    assert token_deadline(late, 3, 0.1) == pytest.approx(13.2)


def test_evaluate_banked_slack_then_tbt_violation():
    outcome = evaluate(CHAT, 10.0, [11.0, 11.5, 12.15, 12.35])
    assert outcome.ttft == pytest.approx(1.0)
    assert outcome.ttlt == pytest.approx(2.35)
    assert outcome.tbts == pytest.approx((0.5, 0.65, 0.2))
    # token 2 due 12.1, token 3 due 12.2 (a 0.65 s gap, yet on time), token 4 due 12.3: late
    assert outcome.violations == ("tbt",)
    assert outcome.primary == "ttft" and not outcome.missed
    assert outcome.tokens == 4


def test_evaluate_late_first_token_reanchors_tbt():
    # TTFT 3 s > 2 s; without re-anchoring token 2 (13.1) would be due at 12.1 and late.
    outcome = evaluate(CHAT, 10.0, [13.0, 13.1, 13.2])
    assert outcome.violations == ("ttft",)
    assert outcome.missed
    assert evaluate(CHAT, 10.0, [13.0, 13.1, 13.25]).violations == ("ttft", "tbt")


def test_evaluate_ttlt():
    assert evaluate(JOB, 0.0, [100.0, 599.9]).violations == ()
    late = evaluate(JOB, 0.0, [100.0, 600.1])
    assert late.violations == ("ttlt",) and late.missed and late.primary == "ttlt"
    assert late.ttft == 100.0


def test_evaluate_without_tokens():
    outcome = evaluate(CHAT, 5.0, [])
    assert outcome.ttft is None and outcome.ttlt is None and outcome.violations == () and outcome.tokens == 0


def test_tracker_reports_gaps_incrementally():
    tracker = SloTracker(CHAT, 0.0)
    assert tracker.record(3.0) is None
    assert tracker.ttft_missed
    assert tracker.record(3.5) == pytest.approx(0.5)
    assert tracker.tbt_violated  # token 2 due at 3.1 after re-anchoring at 3.0
    assert tracker.outcome().violations == ("ttft", "tbt")
