"""Turning a trace into timed requests for the simulator: rates, rate schedules, tier mix.

Traces with timestamps keep their own burstiness by default: the recorded
gaps are scaled so that the mean rate becomes the rate asked for (and the
trace repeats if the run outlasts it). Traces without timestamps, or any
trace when Poisson arrivals are asked for, get Poisson arrivals and lengths
drawn at random from the trace. Requests go to tiers at random in the
``mix`` shares. The draws are ``qos.arrivals``' (the bench's too), from RNGs
seeded by ``seed``, so a seed fixes the workload exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

from .arrivals import ArrivalProcess, RatePhase, arrivals, rate_at, tier_draws
from .config import TierConfig
from .request import Request
from .sessions import Conversations, conversations
from .traces import Trace

__all__ = ["RatePhase", "build_workload", "draw_requests", "parse_mix", "parse_rate_schedule", "rate_at"]


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


def draw_requests(
    trace: Trace,
    tiers: TierConfig,
    mix: Sequence[float],
    process: ArrivalProcess,
    duration: float,
    seed: int,
    max_requests: int | None = None,
) -> list[Request]:
    """Requests arriving in ``[0, duration)`` by ``process``, sorted by arrival, with the trace's lengths.

    Request ``i`` is named ``r{i}``; `niyama bench serve` sends the same
    requests (``bench.workload.build_requests``) from the same call.
    """
    times = arrivals(process, duration, seed, len(trace), trace.times, max_requests)
    next_tier = tier_draws(tiers, mix, seed)
    return [
        Request(f"r{index}", next_tier(), arrival.time, trace.prompt_lens[arrival.row], trace.output_lens[arrival.row])
        for index, arrival in enumerate(times)
    ]


def build_workload(
    trace: Trace,
    tiers: TierConfig,
    mix: Sequence[float],
    phases: Sequence[RatePhase],
    duration: float,
    seed: int,
    poisson: bool = False,
    burstiness: float = 1.0,
    sessions: Conversations | None = None,
) -> list[Request]:
    """The simulator's default arrivals: a timed trace's own, or Poisson (``poisson``, or a trace without times).

    ``poisson`` ignores the trace's timestamps (the paper's setup: Poisson
    arrivals, lengths drawn from the trace); a ``burstiness`` other than 1
    makes them gamma arrivals of that shape (as `niyama bench serve
    --burstiness` does). With ``sessions`` the requests are the turns of
    multi-turn conversations (``qos.sessions``), sharing prefixes.
    """
    kind = "poisson" if poisson or trace.native_rate is None else "trace"
    kind = "gamma" if burstiness != 1.0 else kind
    requests = draw_requests(trace, tiers, mix, ArrivalProcess(kind, tuple(phases), burstiness), duration, seed)
    return requests if sessions is None else conversations(requests, sessions, seed)
