"""What the scheduler learns about its own load from the steps it runs.

- Prefill rate: an exponential average of prefill tokens per second over the
  steps that prefilled; relegation and selective preemption turn queued work
  into predicted time with it.
- Hybrid-priority alpha: ``deadline + alpha * remaining_work`` is EDF at
  alpha = 0 and tends to shortest-remaining-first as alpha grows. EDF is best
  while everything fits; under overload, serving short prompts first saves
  more deadlines. So alpha follows saturation, the exponential average of
  "this step's prefill budget was used up", in ``levels`` discrete steps with
  hysteresis (each change re-sorts the queues).
"""

from __future__ import annotations

SATURATION_DECAY = 0.99
HYSTERESIS = 0.75


class LoadTracker:
    def __init__(
        self, initial_rate: float, rate_decay: float, alpha_max: float, levels: int, hybrid: bool, adaptive: bool = True
    ) -> None:
        self.prefill_rate = initial_rate
        self.rate_decay = rate_decay
        self.alpha_max = alpha_max if hybrid else 0.0
        self.levels = levels
        self.adaptive = hybrid and adaptive
        self.saturation = 0.0
        self.level = 0 if adaptive else levels

    @property
    def alpha(self) -> float:
        return self.alpha_max * self.level / self.levels

    def observe(self, prefill_tokens: int, seconds: float, saturated: bool) -> bool:
        """Account one step; True when alpha changed (the queues must be re-keyed)."""
        if prefill_tokens > 0 and seconds > 0:
            decay = self.rate_decay
            self.prefill_rate = decay * self.prefill_rate + (1 - decay) * prefill_tokens / seconds
        if not self.adaptive:
            return False
        self.saturation = SATURATION_DECAY * self.saturation + (1 - SATURATION_DECAY) * saturated
        target = self.saturation * self.levels
        if abs(target - self.level) < HYSTERESIS:
            return False
        self.level = round(target)
        return True
