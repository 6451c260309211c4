"""Discrete-event replay of a workload through the real scheduler.

The virtual worker takes each plan, advances a virtual clock by the latency
model's time for the plan's shape, and hands the scheduler the result, just
as the engine loop does with a real worker. The latency model that plays the
hardware ("truth") is a separate instance from the scheduler's predictor, so
the predictor's online correction is exercised honestly (it starts equal to
the truth here, so its error stays near zero).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .config import TierConfig
from .errors import RequestTooLargeError
from .kv_blocks import BlockAllocator
from .plan import StepResult
from .predictor import LatencyPredictor
from .request import Request
from .scheduler import make_scheduler
from .slo import SloOutcome, SloTracker
from .stats import SchedulerStats
from .tiers import apply_overrides


@dataclass(frozen=True)
class SimSetup:
    """Everything about the server being simulated (the workload is separate)."""

    tiers: TierConfig
    policy: str = "niyama"
    latency_model: str = "a100-llama3-8b"
    kv_tokens: int = 400_000
    block_size: int = 16
    options: dict = field(default_factory=dict)  # PolicyConfig fields


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
    stats: SchedulerStats
    misses: int  # requests that missed their primary target (counted as soon as known)
    aborted: bool  # stopped early because misses exceeded the caller's limit


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
    truth = LatencyPredictor.load(setup.latency_model)
    allocator = BlockAllocator(max(1, setup.kv_tokens // setup.block_size), setup.block_size)
    scheduler = make_scheduler(setup.policy, setup.tiers, allocator, LatencyPredictor.load(setup.latency_model), **setup.options)
    records = {name: TierRecord() for name in setup.tiers.names}
    live: dict[str, tuple[SloTracker, TierRecord]] = {}
    predict = truth.predict_parts
    now = 0.0
    steps = tokens = misses = 0
    index, count = 0, len(requests)
    limit = count + 1 if stop_after_misses is None else stop_after_misses
    while misses <= limit:
        while index < count and requests[index].arrival <= now:
            request = requests[index]
            index += 1
            record = records[request.tier]
            try:
                scheduler.add(request, now)
            except RequestTooLargeError:
                record.rejected += 1
                misses += 1
                continue
            targets = apply_overrides(setup.tiers.tier(request.tier), request.ttft, request.tbt, request.ttlt)
            live[request.id] = (SloTracker(targets, request.arrival), record)
        plan = scheduler.schedule(now)
        if plan.is_empty:
            if index < count:
                now = max(now, requests[index].arrival)
                continue
            if live:
                raise RuntimeError(f"simulation stalled with {len(live)} requests unfinished")
            break
        shape = plan.shape
        seconds = predict(shape.prefill_tokens, shape.decode_tokens, shape.decode_context, shape.prefill_context)
        now += seconds
        steps += 1
        tokens += shape.prefill_tokens + shape.decode_tokens
        for chunk in plan.chunks:
            if chunk.sample:
                tracker, record = live[chunk.request_id]
                gap = tracker.record(now)
                if gap is None:
                    misses += tracker.ttft_missed
                else:
                    record.tbts.append(gap)
        finished = scheduler.on_step(StepResult((), seconds), now)
        for request_id in finished:
            tracker, record = live.pop(request_id)
            outcome = tracker.outcome()
            record.outcomes.append(outcome)
            misses += outcome.primary == "ttlt" and outcome.missed
        if finished and progress is not None:
            progress(len(finished))
    return SimResult(records, steps, tokens, now, scheduler.stats(), misses, misses > limit)

