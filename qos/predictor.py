"""Step latency prediction: a piecewise-linear model in the step's shape.

``seconds = c0 + cT*T + cP*P + cD*D + cCd*Cd + cCp*Cp`` per segment of total
tokens T, as in the reference model (REFERENCE.md), plus ``cG*G`` for the G
sampling rows a grammar masks (one coefficient, measured by ``niyama profile``
as ``seconds_per_constrained_row``; a profile without it, or a reference
model, uses ``CONSTRAINED_ROW_SECONDS``). The model comes from a
profile the worker measured (``niyama profile``) or from a built-in reference;
``observe`` then corrects it online with one multiplicative factor per
segment (an exponential average of actual/predicted), so a profile taken on a
cold machine, or a reference model for slightly different hardware,
converges to what the engine really sees.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from .errors import ProfileError
from .files import read_file
from .fitting import Sample, fit_piecewise
from .plan import StepShape

MIN_SECONDS = 1e-6
# A grammar-masked sampling row's added step time where a profile did not measure it: provisional, from
# llguidance's ~21 us median mask (docs/results/grammar.md) plus the mask's application, rounded up.
CONSTRAINED_ROW_SECONDS = 1e-4
SAMPLE_FIELDS = ("prefill_tokens", "decode_tokens", "decode_context", "prefill_context", "seconds")


@dataclass(frozen=True, slots=True)
class PiecewiseModel:
    """``segments[i]`` covers total tokens up to ``breakpoints[i]`` (the last one, the rest)."""

    breakpoints: tuple[int, ...]
    segments: tuple[tuple[float, float, float, float, float, float], ...]

    def segment(self, total_tokens: int) -> int:
        for index, breakpoint in enumerate(self.breakpoints):
            if total_tokens <= breakpoint:
                return index
        return len(self.breakpoints)


REFERENCE_MODELS: dict[str, PiecewiseModel] = {
    # Llama-3-8B on one A100 (REFERENCE.md): T <= 512 and T > 512.
    "a100-llama3-8b": PiecewiseModel(
        (512,),
        (
            (0.014936, 5.882475e-5, 2.247956e-5, 3.634519e-5, 1.111258e-7, 7.554773e-7),
            (0.005004, 2.719050e-5, 6.863043e-5, -4.143993e-5, 1.663409e-7, 2.727223e-6),
        ),
    ),
}


class LatencyPredictor:
    def __init__(
        self, model: PiecewiseModel, name: str, correction_weight: float = 0.05, error_window: int = 256,
        constrained_row_seconds: float = CONSTRAINED_ROW_SECONDS,
    ) -> None:  # fmt: skip
        self.model = model
        self.constrained_row_seconds = constrained_row_seconds
        self.name = name
        self.correction_weight = correction_weight
        self._factors = [1.0] * len(model.segments)
        self._errors: deque[float] = deque(maxlen=error_window)
        self.observations = 0

    @classmethod
    def reference(cls, name: str) -> LatencyPredictor:
        if name not in REFERENCE_MODELS:
            raise ProfileError(f"unknown reference latency model {name!r}; built in: {', '.join(REFERENCE_MODELS)}")
        return cls(REFERENCE_MODELS[name], name)

    @classmethod
    def from_profile(cls, path: str | Path) -> LatencyPredictor:
        """Fit the model to the samples of a ``niyama profile`` JSON file."""
        path = Path(path)
        data = read_file(path, "latency profile", ProfileError, json.loads, (json.JSONDecodeError,), "JSON")
        return cls.from_profile_data(data, str(path), path.stem, path.name)

    @classmethod
    def from_profile_data(cls, data: object, source: str, label: str, origin: str) -> LatencyPredictor:
        """Fit the model to a profile already read (a remote worker sends its own as data)."""
        samples = parse_samples(data, source)
        try:
            breakpoints, segments = fit_piecewise(samples)
        except ValueError as exc:
            raise ProfileError(f"{source}: {exc}") from None
        label = data.get("model", label)
        row = data.get("seconds_per_constrained_row", CONSTRAINED_ROW_SECONDS)
        if isinstance(row, bool) or not isinstance(row, (int, float)) or not 0 <= row < math.inf:
            raise ProfileError(f"{source}: seconds_per_constrained_row: expected a non-negative number, got {row!r}")
        return cls(PiecewiseModel(breakpoints, segments), f"{label} ({origin})", constrained_row_seconds=row)

    @classmethod
    def load(cls, spec: str) -> LatencyPredictor:
        """A reference model name, or a path to a profile JSON."""
        return cls.reference(spec) if spec in REFERENCE_MODELS else cls.from_profile(spec)

    def predict_parts(
        self, prefill: int, decode: int, decode_context: int, prefill_context: int, constrained: int = 0
    ) -> float:
        """Seconds for a step of this shape; the hot path, without building a StepShape."""
        total = prefill + decode
        index = self.model.segment(total)
        c0, ct, cp, cd, ccd, ccp = self.model.segments[index]
        raw = c0 + ct * total + cp * prefill + cd * decode + ccd * decode_context + ccp * prefill_context
        raw += self.constrained_row_seconds * constrained
        return max(MIN_SECONDS, raw * self._factors[index])

    def predict(self, shape: StepShape) -> float:
        return self.predict_parts(
            shape.prefill_tokens, shape.decode_tokens, shape.decode_context, shape.prefill_context, shape.constrained
        )

    def observe(self, shape: StepShape, seconds: float) -> None:
        """Learn from one measured step: record the error, then nudge the segment's factor."""
        if not seconds > 0 or shape.total_tokens == 0:
            return
        predicted = self.predict(shape)
        self._errors.append(abs(predicted - seconds) / seconds)
        index = self.model.segment(shape.total_tokens)
        ratio = min(10.0, max(0.1, seconds / predicted))
        self._factors[index] *= math.exp(self.correction_weight * math.log(ratio))
        self.observations += 1

    @property
    def error(self) -> float | None:
        """Mean absolute percentage error (a fraction) of the recent predictions, before each correction."""
        return sum(self._errors) / len(self._errors) if self._errors else None

    @property
    def factors(self) -> tuple[float, ...]:
        return tuple(self._factors)


def parse_samples(data: object, source: str) -> list[Sample]:
    if not isinstance(data, dict) or not isinstance(data.get("samples"), list):
        raise ProfileError(f"{source}: expected an object with a \"samples\" list")
    samples = []
    for index, raw in enumerate(data["samples"]):
        if not isinstance(raw, dict):
            raise ProfileError(f"{source}: samples[{index}]: expected an object")
        values = []
        for field in SAMPLE_FIELDS:
            value = raw.get(field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or not math.isfinite(value):
                raise ProfileError(
                    f"{source}: samples[{index}]: field {field!r}: expected a non-negative number, got {value!r}"
                )
            values.append(value)
        if values[-1] <= 0 or values[0] + values[1] <= 0:
            raise ProfileError(f"{source}: samples[{index}]: a sample needs tokens and a positive time")
        samples.append(Sample(int(values[0]), int(values[1]), int(values[2]), int(values[3]), float(values[4])))
    if not samples:
        raise ProfileError(f"{source}: the profile has no samples")
    return samples
