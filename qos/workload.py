"""Turning a trace into timed requests: rates, rate schedules, tier mix.

Traces with timestamps keep their own burstiness by default: the recorded
gaps are scaled so that the mean rate becomes the rate asked for (and the
trace repeats if the run outlasts it). Traces without timestamps, or any
trace when Poisson arrivals are asked for, get Poisson arrivals and lengths
drawn at random from the trace. Requests go to tiers at random in the
``mix`` shares. Everything is drawn from RNGs seeded by ``seed``, so a seed
fixes the workload exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .config import TierConfig
from .request import Request
from .traces import Trace


@dataclass(frozen=True, slots=True)
class RatePhase:
    rate: float  # requests per second
    seconds: float


def parse_rate_schedule(text: str) -> tuple[RatePhase, ...]:
    """``"2:900,5:900"``: 2 req/s for 900 s, then 5 req/s for 900 s, repeating."""
    phases = []
    for part in text.split(","):
        rate, sep, seconds = part.partition(":")
        try:
            phase = RatePhase(float(rate), float(seconds))
        except ValueError:
            raise ValueError(f"rate schedule entries are RATE:SECONDS, got {part.strip()!r}") from None
        if not sep or not phase.rate > 0 or not phase.seconds > 0:
            raise ValueError(f"rate schedule entries are RATE:SECONDS with both positive, got {part.strip()!r}")
        phases.append(phase)
    return tuple(phases)


def parse_mix(text: str, tiers: TierConfig) -> tuple[float, ...]:
    """Shares per tier in file order (``"0.34,0.33,0.33"``), normalised to sum to 1."""
    try:
        shares = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"mix must be comma-separated numbers, got {text!r}") from None
    if len(shares) != len(tiers.tiers):
        names = ", ".join(tiers.names)
        raise ValueError(f"mix has {len(shares)} shares but the tier file has {len(tiers.tiers)} tiers ({names})")
    if any(not share >= 0 for share in shares) or sum(shares) <= 0:
        raise ValueError(f"mix shares must be non-negative and not all zero, got {text!r}")
    total = sum(shares)
    return tuple(share / total for share in shares)


def rate_at(phases: Sequence[RatePhase], time: float) -> float:
    cycle = sum(phase.seconds for phase in phases)
    offset = time % cycle
    for phase in phases:
        if offset < phase.seconds:
            return phase.rate
        offset -= phase.seconds
    return phases[-1].rate


def tier_draws(tiers: TierConfig, mix: Sequence[float], seed: int) -> Callable[[], str]:
    """Each call: the next request's tier, drawn in ``mix`` shares (file order) from the seed's own stream."""
    rng = random.Random(f"{seed}:tiers")
    cumulative = [sum(mix[: i + 1]) for i in range(len(mix))]
    last = max(i for i, share in enumerate(mix) if share > 0)
    cumulative[last] = 2.0  # rounding must never leave a draw unassigned
    names = tiers.names

    def draw() -> str:
        value = rng.random()
        return next((names[i] for i, edge in enumerate(cumulative) if value < edge), names[-1])

    return draw


def build_workload(
    trace: Trace,
    tiers: TierConfig,
    mix: Sequence[float],
    phases: Sequence[RatePhase],
    duration: float,
    seed: int,
    poisson: bool = False,
) -> list[Request]:
    """Requests arriving in ``[0, duration)``, sorted by arrival.

    ``poisson`` ignores the trace's timestamps (the paper's setup: Poisson
    arrivals, lengths drawn from the trace).
    """
    arrivals_rng = random.Random(f"{seed}:arrivals")
    lengths_rng = random.Random(f"{seed}:lengths")
    next_tier = tier_draws(tiers, mix, seed)
    native = None if poisson else trace.native_rate
    times = trace.times
    mean_gap = 1.0 / native if native else 0.0
    requests: list[Request] = []
    now = 0.0
    index = 0
    while True:
        if native is None:
            now += arrivals_rng.expovariate(rate_at(phases, now))
            row = lengths_rng.randrange(len(trace))
        elif index > 0:
            row = index % len(trace)
            gap = times[row] - times[row - 1] if row > 0 else mean_gap
            now += gap * native / rate_at(phases, now)
        else:
            row = 0
        if now >= duration:
            return requests
        requests.append(Request(f"r{index}", next_tier(), now, trace.prompt_lens[row], trace.output_lens[row]))
        index += 1
