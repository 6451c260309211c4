"""When requests arrive and which tier each belongs to: the one generator the simulator and the bench share.

`niyama simulate` (``qos.workload``) and `niyama bench serve`
(``bench.workload``) both draw their requests here, so the same trace,
tiers, mix, rate, duration and seed give the same requests at the same
times in both, and a simulation can replay exactly what a bench run sent.

Every process fixes the send times in advance, whatever the server does
(open loop: a generator that waits for answers hides queueing).

- Poisson: exponential gaps at the rate in force (``RatePhase`` schedules
  repeat); trace rows (the lengths) drawn at random.
- Gamma: gaps from a gamma distribution with shape ``burstiness`` and the
  same mean (vLLM's convention): 1 is Poisson, below 1 burstier (coefficient
  of variation ``1/sqrt(burstiness)``), above 1 more regular.
- Trace: the recorded gaps, scaled so that the mean rate is the rate in
  force; rows in order (a row's lengths belong with its timestamp), and the
  trace repeats if the run outlasts it.

Times, rows and tiers come from three RNG streams of the seed, so the rows
drawn do not depend on the rate and the tiers do not depend on either.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .config import TierConfig

PROCESSES = ("poisson", "gamma", "trace")


@dataclass(frozen=True, slots=True)
class RatePhase:
    rate: float  # requests per second
    seconds: float


def rate_at(phases: Sequence[RatePhase], time: float) -> float:
    cycle = sum(phase.seconds for phase in phases)
    offset = time % cycle
    for phase in phases:
        if offset < phase.seconds:
            return phase.rate
        offset -= phase.seconds
    return phases[-1].rate


@dataclass(frozen=True, slots=True)
class ArrivalProcess:
    kind: str  # one of PROCESSES
    phases: tuple[RatePhase, ...]  # the rate (or a repeating schedule of rates)
    burstiness: float = 1.0  # gamma shape; only for kind "gamma"

    def __post_init__(self) -> None:
        if self.kind not in PROCESSES:
            raise ValueError(f"unknown arrival process {self.kind!r}; choose from {', '.join(PROCESSES)}")
        if not self.phases:
            raise ValueError("an arrival process needs a rate")
        if not self.burstiness > 0:
            raise ValueError(f"burstiness must be positive, got {self.burstiness}")


@dataclass(frozen=True, slots=True)
class Arrival:
    time: float  # seconds after the start of the run
    row: int  # the trace row whose lengths this request takes


def arrivals(
    process: ArrivalProcess,
    duration: float,
    seed: int,
    trace_len: int,
    trace_times: Sequence[float] | None = None,
    max_requests: int | None = None,
) -> list[Arrival]:
    """Arrivals in ``[0, duration)``, at most ``max_requests``, each with the trace row it draws."""
    if process.kind == "trace":
        if not trace_times or len(trace_times) < 2 or trace_times[-1] <= 0:
            raise ValueError("trace arrivals need a trace with timestamps spanning some time")
        return _trace_arrivals(process.phases, trace_times, duration, max_requests)
    times_rng = random.Random(f"{seed}:arrivals")
    rows_rng = random.Random(f"{seed}:lengths")
    shape = 1.0 if process.kind == "poisson" else process.burstiness
    result: list[Arrival] = []
    now = 0.0
    while max_requests is None or len(result) < max_requests:
        rate = rate_at(process.phases, now)
        now += times_rng.expovariate(rate) if shape == 1.0 else times_rng.gammavariate(shape, 1.0 / (shape * rate))
        row = rows_rng.randrange(trace_len)
        if now >= duration:
            break
        result.append(Arrival(now, row))
    return result


def _trace_arrivals(
    phases: Sequence[RatePhase], times: Sequence[float], duration: float, max_requests: int | None
) -> list[Arrival]:
    native = (len(times) - 1) / times[-1]
    mean_gap = 1.0 / native
    result: list[Arrival] = []
    now = 0.0
    index = 0
    while max_requests is None or len(result) < max_requests:
        row = index % len(times)
        if index > 0:
            gap = times[row] - times[row - 1] if row > 0 else mean_gap
            now += gap * native / rate_at(phases, now)
        if now >= duration:
            break
        result.append(Arrival(now, row))
        index += 1
    return result


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
