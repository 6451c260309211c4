"""Open-loop arrival times: Poisson, gamma (bursty), or a trace's own timestamps.

A load generator that waits for answers before sending more (closed loop)
hides queueing: the slower the server, the gentler the load. Every process
here fixes the send times in advance, whatever the server does.

- Poisson: exponential gaps at the rate in force (``RatePhase`` schedules
  repeat). Drawn exactly as ``niyama.qos.workload.build_workload`` draws
  them (same RNG stream, same calls), so a seed gives the simulator and the
  bench the same arrivals.
- Gamma: gaps from a gamma distribution with shape ``burstiness`` and the
  same mean (vLLM's convention): 1 is Poisson, below 1 burstier (coefficient
  of variation ``1/sqrt(burstiness)``), above 1 more regular.
- Trace: the recorded gaps, scaled so that the mean rate is the rate in
  force; the trace repeats if the run outlasts it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from niyama.qos.workload import RatePhase, rate_at

PROCESSES = ("poisson", "gamma", "trace")


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
    """Arrivals in ``[0, duration)``, at most ``max_requests``, each with the trace row it draws.

    Synthetic processes draw rows at random (seeded apart from the times, so
    a row sequence does not depend on the rate); trace arrivals take rows in
    order, since a row's lengths belong with its timestamp.
    """
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
