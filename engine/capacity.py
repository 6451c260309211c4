"""Capacity questions answered by repeated simulation: goodput, and replicas needed.

Goodput is the highest request rate at which at most 1% of requests miss
their primary target (TTFT for interactive tiers, TTLT for batch ones). It
is found by probing rates with the same seed (so every probe sees the same
workload shape), bracketing by doubling or halving, then bisecting until the
bracket is within ``precision``. A probe stops simulating as soon as misses
pass the budget, so overloaded probes are cheap. This assumes misses grow
with the rate, which holds up to the noise of one workload sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from niyama.qos.policy import policy_config
from niyama.qos.request import Request
from niyama.qos.sessions import Conversations
from niyama.qos.traces import Trace
from niyama.qos.workload import RatePhase, build_workload

from .simulator import SimSetup, simulate

MISS_BUDGET = 0.01
# The paper's siloed baseline: one replica group per tier with a fixed chunk.
SILO_BUDGETS = {"interactive": 256, "batch": 2048}


@dataclass(frozen=True, slots=True)
class Probe:
    rate: float
    requests: int
    misses: int

    @property
    def ok(self) -> bool:
        return self.misses <= MISS_BUDGET * self.requests


def probe(setup: SimSetup, requests: Sequence[Request], rate: float = 0.0) -> Probe:
    budget = math.floor(MISS_BUDGET * len(requests))
    result = simulate(setup, requests, stop_after_misses=budget)
    return Probe(rate, len(requests), result.misses)


def goodput(
    run: Callable[[float], Probe], start: float, precision: float = 0.02, floor: float = 1e-3
) -> tuple[float, list[Probe]]:
    """The highest ok rate (0.0 if even ``floor`` misses too much) and every probe made."""
    probes: list[Probe] = []

    def ok(rate: float) -> bool:
        result = run(rate)
        probes.append(result)
        return result.ok

    low, high = start, start
    if ok(start):
        high = start * 2
        while ok(high):
            low, high = high, high * 2
    else:
        low = start / 2
        while not ok(low):
            if low < floor:
                return 0.0, probes
            high, low = low, low / 2
    while high / low > 1 + precision:
        middle = math.sqrt(low * high)
        if ok(middle):
            low = middle
        else:
            high = middle
    return low, probes


def goodput_search(
    setup: SimSetup,
    trace: Trace,
    mix: Sequence[float],
    duration: float,
    seed: int,
    poisson: bool,
    start: float,
    on_probe: Callable[[Probe], None] | None = None,
    burstiness: float = 1.0,
    sessions: Conversations | None = None,
) -> tuple[float, list[Probe]]:
    """Goodput of ``setup`` on ``trace``: every probe rebuilds the workload at its rate with the same seed.

    The workload is ``build_workload``'s: ``poisson`` or the trace's times, gamma with a ``burstiness`` other than 1,
    multi-turn ``sessions`` if given.
    """

    def run(rate: float) -> Probe:
        phases = (RatePhase(rate, duration),)
        requests = build_workload(trace, setup.tiers, mix, phases, duration, seed, poisson, burstiness, sessions)
        result = probe(setup, requests, rate)
        if on_probe is not None:
            on_probe(result)
        return result

    return goodput(run, start)


def replicas_needed(setup: SimSetup, requests: Sequence[Request], limit: int = 256) -> int:
    """The fewest replicas of ``setup`` that keep misses of ``requests`` within 1% (doubling, then bisection).

    The replicas share the requests by ``setup.routing``.
    """
    if not requests:
        return 0
    budget = math.floor(MISS_BUDGET * len(requests))

    def ok(replicas: int) -> bool:
        return simulate(replace(setup, replicas=replicas), requests, stop_after_misses=budget).misses <= budget

    high = 1
    while not ok(high):
        if high >= limit:
            raise ValueError(f"more than {limit} replicas would be needed")
        high *= 2
    low = high // 2  # not ok (or 0)
    while high - low > 1:
        middle = (low + high) // 2
        if ok(middle):
            high = middle
        else:
            low = middle
    return high


@dataclass(frozen=True)
class SiloComparison:
    shared: int
    silo: dict[str, int]

    @property
    def silo_total(self) -> int:
        return sum(self.silo.values())

    @property
    def saving_pct(self) -> float:
        return 100.0 * (self.silo_total - self.shared) / self.silo_total if self.silo_total else 0.0


def silo_vs_shared(setup: SimSetup, requests: Sequence[Request]) -> SiloComparison:
    """Replicas for ``requests`` on one shared pool of ``setup`` vs one EDF group per tier.

    Each tier's group serves only that tier's requests (routed over its
    replicas by ``setup.routing``) with the paper's fixed budget: 256 tokens for interactive
    tiers, 2048 for batch ones. Each group, and the shared pool, must keep
    its own misses within 1%.
    """
    shared = replicas_needed(setup, requests)
    silo = {}
    for tier in setup.tiers.tiers:
        own = [r for r in requests if r.tier == tier.name]
        silo_setup = replace(setup, policy=policy_config("edf", token_budget=SILO_BUDGETS[tier.kind]))
        silo[tier.name] = replicas_needed(silo_setup, own)
    return SiloComparison(shared, silo)
