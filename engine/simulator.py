"""Discrete-event replay of a workload through the engine core, on one replica or several.

Each replica is an `EngineCore` with a `VirtualWorker`, on one shared
`VirtualClock`: a step starts with ``prepare`` and the worker's time for its
shape, and ends with ``complete`` at that virtual time, exactly as the
engine loop drives a real worker. The worker's time is the device's truth
(`engine/truth.py`: the latency model with the run's noise and bias, seeded
per replica); each scheduler's predictor starts from the nominal model and
corrects itself online from those times, so with noise or bias the
scheduler plans on predictions that are wrong as they are on a real device.
A request is routed the moment it arrives (``routing``: the front router's
policy, the same code the server runs) and queued on the chosen replica,
whatever that replica is doing; an idle replica starts a step at once. SLOs are counted with the same O(1) tracker the
server's metrics use.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from niyama.qos.config import TierConfig
from niyama.qos.errors import RequestTooLargeError
from niyama.qos.kv_blocks import BlockAllocator
from niyama.qos.options import RunConfig, TruthConfig
from niyama.qos.plan import Plan
from niyama.qos.policy import PolicyConfig, policy_config
from niyama.qos.predictor import LatencyPredictor
from niyama.qos.request import Request
from niyama.qos.routing import make_routing
from niyama.qos.scheduler import Scheduler
from niyama.qos.slo import SloOutcome, SloTracker
from niyama.qos.stats import SchedulerStats, combine_stats

from .core import EngineCore
from .protocol import SamplingParams
from .request import GenerationRequest
from .truth import TruthModel
from .virtual import VirtualClock, VirtualWorker

GREEDY = SamplingParams()


@dataclass(frozen=True)
class SimSetup:
    """Everything about the server being simulated (the workload is separate)."""

    tiers: TierConfig
    policy: PolicyConfig = field(default_factory=lambda: policy_config("niyama"))
    latency_model: str = "a100-llama3-8b"
    kv_tokens: int = 400_000  # per replica
    block_size: int = 16
    replicas: int = 1
    routing: str = "slack"  # across replicas, as the server routes
    truth: TruthConfig = field(default_factory=TruthConfig)  # how the device departs from the latency model
    seed: int = 0  # of the truth's draws (each replica has its own stream)

    @classmethod
    def from_config(cls, config: RunConfig, tiers: TierConfig | None = None, seed: int = 0) -> SimSetup:
        """The simulated server of a run configuration (the one `niyama serve` takes)."""
        return cls(tiers or config.tier_config(), config.policy, config.latency_model or cls.latency_model,
                   config.cache.kv_tokens or cls.kv_tokens, config.cache.block_size, config.replicas,
                   config.routing, config.truth, seed)  # fmt: skip


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


TRUTH_SEEDS_PER_RUN = 1000  # replica r of a run with seed s draws its step times from seed s * 1000 + r


def make_cores(setup: SimSetup, clock: VirtualClock) -> list[EngineCore]:
    """One engine core per replica: a worker on the device's truth, a scheduler on the nominal model."""
    cores = []
    for replica in range(setup.replicas):
        truth = TruthModel.of(setup.latency_model, setup.truth, setup.seed * TRUTH_SEEDS_PER_RUN + replica)
        allocator = BlockAllocator(max(1, setup.kv_tokens // setup.block_size), setup.block_size)
        scheduler = Scheduler(setup.policy, setup.tiers, allocator, LatencyPredictor.load(setup.latency_model))
        cores.append(EngineCore(scheduler, VirtualWorker(truth), frozenset(), clock))
    return cores


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
    clock = VirtualClock()
    cores = make_cores(setup, clock)
    schedulers = [core.scheduler for core in cores]
    routing = make_routing(setup.routing)
    records = {name: TierRecord() for name in setup.tiers.names}
    live: dict[str, tuple[SloTracker, TierRecord]] = {}
    running: list[tuple[Plan, object] | None] = [None] * setup.replicas  # each replica's step in flight
    finishing: list[tuple[float, int]] = []  # (time, replica) of the steps in flight
    routed = [0] * setup.replicas
    steps = tokens = misses = 0
    index, count = 0, len(requests)
    limit = count + 1 if stop_after_misses is None else stop_after_misses

    def start(replica: int) -> None:
        nonlocal steps, tokens
        core = cores[replica]
        plan, _ = core.prepare()
        if plan.is_empty:
            return
        result = core.worker.execute(plan)
        running[replica] = (plan, result)
        heapq.heappush(finishing, (clock.now + result.seconds, replica))
        steps += 1
        tokens += plan.shape.total_tokens

    while misses <= limit:
        next_done = finishing[0][0] if finishing else math.inf
        if index < count and requests[index].arrival <= next_done:
            clock.now = now = requests[index].arrival
            woken = set()
            while index < count and requests[index].arrival <= now:
                request = requests[index]
                index += 1
                record = records[request.tier]
                submitted = GenerationRequest(request.id, request.tier, request.arrival, request.prompt_len,
                                              request.max_new_tokens, request.targets, request.prompt_ids,
                                              GREEDY, True)  # fmt: skip
                for replica in routing.rank(schedulers, submitted, now):
                    try:
                        _, targets = cores[replica].add(submitted)
                    except RequestTooLargeError:
                        continue
                    routed[replica] += 1
                    woken.add(replica)
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
        clock.now, replica = heapq.heappop(finishing)
        _, result = running[replica]
        running[replica] = None
        completed = 0
        for output in cores[replica].complete(result).tokens:
            tracker, record = live[output.request_id]
            gap = tracker.record(clock.now)
            if gap is None:
                misses += tracker.ttft_missed
            else:
                record.tbts.append(gap)
            if output.finish_reason is not None:
                del live[output.request_id]
                outcome = tracker.outcome()
                record.outcomes.append(outcome)
                misses += outcome.primary == "ttlt" and outcome.missed
                completed += 1
        if completed and progress is not None:
            progress(completed)
        start(replica)
    stats = combine_stats([scheduler.stats() for scheduler in schedulers])
    return SimResult(records, steps, tokens, clock.now, stats, misses, misses > limit, tuple(routed))
