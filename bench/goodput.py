"""Goodput search against a real server: the highest rate with at most 1% of requests missing.

The same definition and the same search as ``niyama.engine.capacity.goodput``
(bracket by doubling or halving from a start rate, then bisect
geometrically; a probe is ok when misses <= 1% of its requests), in a
stepwise form: ``next_rate()`` says what to probe, ``record(probe)`` takes the
result. A real probe takes minutes, so the caller owns the loop; that is what
lets an evaluation interleave the searches of several servers probe by probe,
so that a noisy machine slows them all alike. ``max_probes`` bounds the cost:
the answer is then the best rate proved so far.
"""

from __future__ import annotations

import math

from niyama.engine.capacity import MISS_BUDGET, Probe


def miss_budget(requests: int) -> int:
    """Misses allowed in a probe of ``requests`` requests (1%, rounded down)."""
    return math.floor(MISS_BUDGET * requests)


class GoodputSearch:
    def __init__(self, start: float, precision: float = 0.1, max_probes: int = 8, floor: float = 1e-3) -> None:
        if not start > 0 or not precision > 0 or max_probes < 1:
            raise ValueError("goodput search needs a positive start rate and precision, and at least one probe")
        self.start = start
        self.precision = precision
        self.max_probes = max_probes
        self.floor = floor
        self.probes: list[Probe] = []
        self.low: float | None = None  # highest rate proved ok
        self.high: float | None = None  # lowest rate proved not ok

    def next_rate(self) -> float | None:
        """The rate to probe next; None when the search is over."""
        if len(self.probes) >= self.max_probes:
            return None
        if self.low is None and self.high is None:
            return self.start
        if self.high is None:
            return self.low * 2
        if self.low is None:
            return None if self.high < self.floor else self.high / 2
        if self.high / self.low <= 1 + self.precision:
            return None
        return math.sqrt(self.low * self.high)

    def record(self, probe: Probe) -> None:
        self.probes.append(probe)
        if probe.ok:
            self.low = probe.rate if self.low is None else max(self.low, probe.rate)
        else:
            self.high = probe.rate if self.high is None else min(self.high, probe.rate)

    @property
    def done(self) -> bool:
        return self.next_rate() is None

    @property
    def goodput(self) -> float:
        """The highest rate proved ok (0.0 if none was)."""
        return self.low or 0.0

    @property
    def bracketed(self) -> bool:
        """True when a failing rate above the answer was seen, so the answer is not just a lower bound."""
        return self.high is not None and (self.low is None or self.high > self.low)
