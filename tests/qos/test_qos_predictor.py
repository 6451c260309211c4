"""The latency predictor: reference coefficients, fitting a profile, online correction."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from niyama.qos.errors import ProfileError
from niyama.qos.fitting import solve_least_squares
from niyama.qos.plan import StepShape
from niyama.qos.predictor import CONSTRAINED_ROW_SECONDS, LatencyPredictor

PROFILE = Path(__file__).parent / "data" / "sample_profile.json"


def test_reference_model_small_step():
    predictor = LatencyPredictor.reference("a100-llama3-8b")
    # T = 110 <= 512: 0.014936 + 5.882475e-5*110 + 2.247956e-5*100 + 3.634519e-5*10
    #                 + 1.111258e-7*5000 + 7.554773e-7*100
    assert predictor.predict(StepShape(100, 10, 5000, 100)) == pytest.approx(0.02464930713, rel=1e-9)


def test_reference_model_large_step():
    predictor = LatencyPredictor.reference("a100-llama3-8b")
    # T = 1000 > 512: 0.005004 + 2.719050e-5*1000 + 6.863043e-5*1000 + 2.727223e-6*1000
    assert predictor.predict(StepShape(1000, 0, 0, 1000)) == pytest.approx(0.103552153, rel=1e-9)
    assert LatencyPredictor.load("a100-llama3-8b").name == "a100-llama3-8b"


def test_fit_recovers_two_regimes_from_a_profile():
    # The sample profile was generated from 0.01 + 1e-4 P + 2e-4 D + 1e-7 Cd + 5e-8 Cp for T <= 256
    # and 0.02 + 5e-5 P + 1e-4 D + 2e-7 Cd + 1e-7 Cp above.
    predictor = LatencyPredictor.load(str(PROFILE))
    assert predictor.model.breakpoints == (256,)
    assert predictor.name == "synthetic-two-regime (sample_profile.json)"
    assert predictor.predict(StepShape(100, 10, 3000, 400)) == pytest.approx(0.02232, rel=1e-6)
    assert predictor.predict(StepShape(1000, 10, 3000, 1400)) == pytest.approx(0.07174, rel=1e-6)


def test_fit_without_enough_samples_for_a_split_uses_one_segment(tmp_path):
    samples = [
        {"prefill_tokens": p, "decode_tokens": d, "decode_context": 10 * d, "prefill_context": p, "seconds": 0.01 + 1e-4 * p + 1e-3 * d}
        for p, d in [(0, 1), (0, 4), (64, 0), (128, 2), (256, 8), (512, 0), (40, 3)]
    ]
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"model": "m", "samples": samples}))
    predictor = LatencyPredictor.from_profile(path)
    assert predictor.model.breakpoints == ()
    assert predictor.predict(StepShape(300, 5, 50, 300)) == pytest.approx(0.01 + 0.03 + 0.005, rel=1e-6)


def test_least_squares_exact_solution():
    rows = [(1.0, 0.0), (1.0, 1.0), (1.0, 2.0)]
    assert solve_least_squares(rows, [1.0, 3.0, 5.0], [1.0, 1.0, 1.0]) == pytest.approx([1.0, 2.0], rel=1e-6)


def test_observe_corrects_and_reports_error():
    predictor = LatencyPredictor.reference("a100-llama3-8b")
    shape = StepShape(1000, 0, 0, 1000)
    predicted = predictor.predict(shape)
    assert predictor.error is None
    predictor.observe(shape, 2 * predicted)
    # error measured before the update: |p - 2p| / 2p
    assert predictor.error == pytest.approx(0.5)
    # the segment's factor moves 5% of the way in log space: 2 ** 0.05
    assert predictor.factors == pytest.approx((1.0, 2**0.05))
    assert predictor.predict(shape) == pytest.approx(predicted * 2**0.05)
    # the other segment is untouched
    small = StepShape(10, 0, 0, 10)
    assert predictor.predict(small) == pytest.approx(LatencyPredictor.reference("a100-llama3-8b").predict(small))
    for _ in range(200):
        predictor.observe(shape, 2 * predicted)
    assert predictor.predict(shape) == pytest.approx(2 * predicted, rel=1e-3)
    assert predictor.observations == 201
    predictor.observe(shape, 0.0)  # an unmeasured step teaches nothing
    assert predictor.observations == 201
    # before observation k the factor is 2 ** (1 - 0.95 ** k), so its error is 1 - 2 ** -(0.95 ** k)
    expected = sum(1 - 2 ** -(0.95**k) for k in range(201)) / 201
    assert math.isclose(predictor.error, expected, rel_tol=1e-9)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ('{"samples": 3}', 'expected an object with a "samples" list'),
        ('{"samples": []}', "the profile has no samples"),
        ('{"samples": [{"prefill_tokens": 1}]}', "samples[0]: field 'decode_tokens': expected a non-negative number, got None"),
        (
            '{"samples": [{"prefill_tokens": 1, "decode_tokens": 0, "decode_context": 0, "prefill_context": 1, "seconds": -1}]}',
            "samples[0]: field 'seconds'",
        ),
        (
            '{"samples": [{"prefill_tokens": 1, "decode_tokens": 0, "decode_context": 0, "prefill_context": 1, "seconds": 1}]}',
            "need at least 5 samples",
        ),
    ],
)
def test_bad_profiles(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ProfileError) as info:
        LatencyPredictor.from_profile(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_unknown_reference_and_missing_file(tmp_path):
    with pytest.raises(ProfileError, match="cannot read latency profile"):
        LatencyPredictor.load(str(tmp_path / "nope.json"))
    with pytest.raises(ProfileError, match="unknown reference latency model 'h100'"):
        LatencyPredictor.reference("h100")


def test_constrained_rows_add_their_measured_mask_cost(tmp_path):
    """Each grammar-masked row adds the profile's seconds_per_constrained_row, else CONSTRAINED_ROW_SECONDS."""
    plain, masked = StepShape(0, 8, 1600, 0), StepShape(0, 8, 1600, 0, constrained=3)
    reference = LatencyPredictor.reference("a100-llama3-8b")
    assert CONSTRAINED_ROW_SECONDS == 1e-4
    assert reference.predict(masked) - reference.predict(plain) == pytest.approx(3 * CONSTRAINED_ROW_SECONDS, rel=1e-9)
    profile = json.loads(PROFILE.read_text())
    assert "seconds_per_constrained_row" not in profile
    assert LatencyPredictor.from_profile(PROFILE).constrained_row_seconds == CONSTRAINED_ROW_SECONDS
    path = tmp_path / "measured.json"
    path.write_text(json.dumps({**profile, "seconds_per_constrained_row": 0.0025}))
    measured = LatencyPredictor.from_profile(path)
    # 0.01 + 2e-4 * 8 + 1e-7 * 1600 from the sample profile's first regime, then 3 rows at 2.5 ms
    assert measured.predict(plain) == pytest.approx(0.01176, rel=1e-6)
    assert measured.predict(masked) == pytest.approx(0.01176 + 3 * 0.0025, rel=1e-6)
    # the online correction scales the whole step, mask cost included
    measured.observe(masked, 2 * measured.predict(masked))
    assert measured.predict(masked) == pytest.approx((0.01176 + 0.0075) * 2**0.05, rel=1e-6)
    path.write_text(json.dumps({**profile, "seconds_per_constrained_row": -1}))
    with pytest.raises(ProfileError, match="seconds_per_constrained_row: expected a non-negative number, got -1"):
        LatencyPredictor.from_profile(path)
