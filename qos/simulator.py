"""Discrete-event replay of a workload through the real scheduler, on one replica or several.

Each replica's virtual worker takes a plan, finishes it after the latency
model's time for the plan's shape, and hands the scheduler the result, just
as the engine loop does with a real worker. Replicas share one virtual clock:
a request is routed the moment it arrives (``routing``: the front router's
policy, the same code the server runs) and queued on the chosen replica's
scheduler, whatever that replica is doing; an idle replica starts a step at
once. The latency model that plays the hardware ("truth") is a separate
instance from each scheduler's predictor, so the predictor's online
correction is exercised honestly (it starts equal to the truth here, so its
error stays near zero).
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .config import TierConfig
from .errors import RequestTooLargeError
from .kv_blocks import BlockAllocator
from .plan import Plan, StepResult
from .predictor import LatencyPredictor
from .request import Request
from .routing import make_routing
from .scheduler import Scheduler, make_scheduler
from .slo import SloOutcome, SloTracker
from .stats import SchedulerStats, combine_stats
from .tiers import apply_overrides


@dataclass(frozen=True)
class SimSetup:
    """Everything about the server being simulated (the workload is separate)."""

    tiers: TierConfig
    policy: str = "niyama"
    latency_model: str = "a100-llama3-8b"
    kv_tokens: int = 400_000  # per replica
    block_size: int = 16
    options: dict = field(default_factory=dict)  # PolicyConfig fields
    replicas: int = 1
    routing: str = "round-robin"  # across replicas: the paper's cluster set-up; the server's default is "slack"


@dataclass
class TierRecord:
    outcomes: list[SloOutcome] = field(default_factory=list)
    tbts: array = field(default_factory=lambda: array("d"))
    rejected: int = 0


@dataclass
class SimResult:
    tiers: dict[str, TierRecord]
    steps: int
    tokens: int  # prefill + decode tokens computed
    end_time: float
    stats: SchedulerStats  # every replica's, summed
    misses: int  # requests that missed their primary target (counted as soon as known)
    aborted: bool  # stopped early because misses exceeded the caller's limit
    routed: tuple[int, ...] = ()  # requests each replica took


def make_replicas(setup: SimSetup) -> list[Scheduler]:
    allocator_blocks = max(1, setup.kv_tokens // setup.block_size)
    return [
        make_scheduler(
            setup.policy,
            setup.tiers,
            BlockAllocator(allocator_blocks, setup.block_size),
            LatencyPredictor.load(setup.latency_model),
            **setup.options,
        )  # fmt: skip
        for _ in range(setup.replicas)
    ]


def simulate(
    setup: SimSetup,
    requests: Sequence[Request],
    stop_after_misses: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> SimResult:
    """Run ``requests`` (sorted by arrival) to completion; rejected requests count as misses.

    With ``stop_after_misses``, the run stops as soon as more requests than
    that have missed their primary target (goodput probes need no more).
    ``progress`` is called with the number of requests that just completed.
    """
    if setup.replicas < 1:
        raise ValueError(f"replicas must be at least 1, got {setup.replicas}")
    predict = LatencyPredictor.load(setup.latency_model).predict_parts
    schedulers = make_replicas(setup)
    routing = make_routing(setup.routing)
    records = {name: TierRecord() for name in setup.tiers.names}
    live: dict[str, tuple[SloTracker, TierRecord]] = {}
    running: list[tuple[Plan, float] | None] = [None] * setup.replicas  # each replica's step in flight, and its time
    finishing: list[tuple[float, int]] = []  # (time, replica) of the steps in flight
    routed = [0] * setup.replicas
    now = 0.0
    steps = tokens = misses = 0
    index, count = 0, len(requests)
    limit = count + 1 if stop_after_misses is None else stop_after_misses

    def start(replica: int) -> None:
        nonlocal steps, tokens
        plan = schedulers[replica].schedule(now)
        if plan.is_empty:
            return
        shape = plan.shape
        seconds = predict(shape.prefill_tokens, shape.decode_tokens, shape.decode_context, shape.prefill_context)
        running[replica] = (plan, seconds)
        heapq.heappush(finishing, (now + seconds, replica))
        steps += 1
        tokens += shape.prefill_tokens + shape.decode_tokens

    while misses <= limit:
        next_done = finishing[0][0] if finishing else math.inf
        if index < count and requests[index].arrival <= next_done:
            now = requests[index].arrival
            woken = set()
            while index < count and requests[index].arrival <= now:
                request = requests[index]
                index += 1
                record = records[request.tier]
                for replica in routing.rank(schedulers, request, now):
                    try:
                        schedulers[replica].add(request, now)
                    except RequestTooLargeError:
                        continue
                    routed[replica] += 1
                    woken.add(replica)
                    targets = apply_overrides(setup.tiers.tier(request.tier), request.ttft, request.tbt, request.ttlt)
                    live[request.id] = (SloTracker(targets, request.arrival), record)
                    break
                else:
                    record.rejected += 1
                    misses += 1
            for replica in sorted(woken):
                if running[replica] is None:
                    start(replica)
            continue
        if not finishing:
            if live:
                raise RuntimeError(f"simulation stalled with {len(live)} requests unfinished")
            break
        now, replica = heapq.heappop(finishing)
        plan, seconds = running[replica]
        running[replica] = None
        for chunk in plan.chunks:
            if chunk.sample:
                tracker, record = live[chunk.request_id]
                gap = tracker.record(now)
                if gap is None:
                    misses += tracker.ttft_missed
                else:
                    record.tbts.append(gap)
        finished = schedulers[replica].on_step(StepResult((), seconds), now)
        for request_id in finished:
            tracker, record = live.pop(request_id)
            outcome = tracker.outcome()
            record.outcomes.append(outcome)
            misses += outcome.primary == "ttlt" and outcome.missed
        if finished and progress is not None:
            progress(len(finished))
        start(replica)
    stats = combine_stats([scheduler.stats() for scheduler in schedulers])
    return SimResult(records, steps, tokens, now, stats, misses, misses > limit, tuple(routed))
