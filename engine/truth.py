"""What a step really costs on the (emulated) device, as opposed to what the scheduler predicts.

The simulator and the emulated device (`niyama serve --emulate`) both take
their step time from a ``TruthModel``: the nominal latency model (a
reference model or a ``niyama profile`` fit), times ``bias`` (the device is
that many times slower than the predictor's starting model believes), times
lognormal noise of spread ``noise`` with mean 1 (so noise alone does not make
the device slower on average), and, whenever there is noise, an occasional
straggler step (``STRAGGLER_SHARE`` of steps take ``STRAGGLER_FACTOR`` times
as long: a page fault, a collective that waited, a preempted host thread).
With noise 0 and bias 1 it is the nominal model exactly, which keeps the
simulator's published figures reproducible.

The scheduler's predictor is a separate instance that starts from the
nominal model and corrects itself online from the times this model returns,
as it does on a real device. The draws come from one seeded RNG, so a
simulation with a seed is exact.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from niyama.qos.options import TruthConfig
from niyama.qos.predictor import LatencyPredictor

STRAGGLER_SHARE = 0.002  # with noise: one step in 500...
STRAGGLER_FACTOR = 4.0  # ...takes four times as long


@dataclass
class TruthModel:
    nominal: LatencyPredictor  # never corrected: the device's own behaviour
    noise: float = 0.0  # sigma of the lognormal factor
    bias: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.noise >= 0 and math.isfinite(self.noise)):
            raise ValueError(f"truth noise must be a non-negative number, got {self.noise}")
        if not (self.bias > 0 and math.isfinite(self.bias)):
            raise ValueError(f"truth bias must be positive, got {self.bias}")
        self._rng = random.Random(f"{self.seed}:truth")

    @classmethod
    def of(cls, latency_model: str, config: TruthConfig, seed: int = 0) -> TruthModel:
        """The truth for a reference model name or profile path, with a run's noise and bias."""
        return cls(LatencyPredictor.load(latency_model), config.noise, config.bias, seed)

    @property
    def exact(self) -> bool:
        return self.noise == 0 and self.bias == 1

    def __call__(self, prefill: int, decode: int, decode_context: int, prefill_context: int) -> float:
        """Seconds the device takes for a step of this shape (a new draw each call)."""
        seconds = self.nominal.predict_parts(prefill, decode, decode_context, prefill_context) * self.bias
        if self.noise > 0:
            seconds *= self._rng.lognormvariate(-self.noise * self.noise / 2, self.noise)
            if self._rng.random() < STRAGGLER_SHARE:
                seconds *= STRAGGLER_FACTOR
        return seconds
