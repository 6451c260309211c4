"""The front router: several replicas, each with its own scheduler and engine loop, behind one engine.

A replica is a scheduler, an `EngineCore` and an `AsyncEngine` in this
process, and a worker that may live elsewhere (a Ray actor): schedulers are
cheap and decide every step, so only the forward pass crosses the network.
`ReplicaSet` offers the routes what one `AsyncEngine` offers (`submit`,
`drain`, `close`, `running`, `accepting`, the scheduler's stats), so the HTTP
layer does not care how many replicas there are.

Routing: a new request goes to the replica the routing policy ranks first
(`qos.routing`: the most predicted slack by default); one that refuses it
(its scheduler's admission, or it is stopping) passes it to the next.

Failure: a step whose worker is lost (`WorkerLost`) marks its replica failed
at once, before any of its requests hear of it; then every request the
replica held is failed out of it, and each `RoutedGeneration` decides: a
request that had produced no token moves to another replica (same seed, same
arrival, so the same tokens and deadlines), one that had streamed tokens ends
with a `generation` error that says why. The failed replica is replaced in
the background (a fresh worker, scheduler and engine, from ``launch``) and
takes requests again once it has loaded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from niyama.qos.errors import AdmissionError
from niyama.qos.request import Request
from niyama.qos.routing import RoutingPolicy
from niyama.qos.scheduler import Scheduler
from niyama.qos.stats import SchedulerStats, combine_stats
from niyama.worker.runner import WorkerLost

from .engine import AsyncEngine, EngineObserver, EngineStopping, Generation
from .engine_core import EngineCore, GenerationRequest, Worker
from .errors import SHUTTING_DOWN, ApiError
from .routed_generation import RoutedGeneration

log = logging.getLogger("niyama.replicas")

RESTART_DELAY_SECONDS = 1.0  # first wait after a failed relaunch; doubles up to the maximum
MAX_RESTART_DELAY_SECONDS = 30.0


def _nothing() -> None:
    return None


@dataclass
class ReplicaParts:
    """A launched replica before it serves: its scheduler, its worker, and how to free what it holds."""

    scheduler: Scheduler
    worker: Worker
    eos_token_ids: frozenset[int]
    stop: Callable[[], None] = _nothing  # e.g. kill the worker's actor
    where: str = "in-process"


Launch = Callable[[int], Awaitable[ReplicaParts]]  # replica index -> a fresh replica


@dataclass
class ReplicaStats:
    """What one replica slot has done since start-up, across restarts (the /metrics counters)."""

    restarts: int = 0
    requests: Counter = field(default_factory=Counter)  # (tier, outcome) -> count; outcome finished, failed, moved
    steps: Counter = field(default_factory=Counter)  # "ok" / "failed" -> count


class Replica:
    """One incarnation of a replica slot: once failed it stays failed, and a new one takes the slot."""

    def __init__(self, index: int, parts: ReplicaParts, stats: ReplicaStats) -> None:
        self.index = index
        self.parts = parts
        self.stats = stats
        self.engine: AsyncEngine | None = None
        self.failure: str | None = None  # why the worker was lost

    @property
    def failed(self) -> bool:
        return self.failure is not None

    @property
    def up(self) -> bool:
        engine = self.engine
        return not self.failed and engine is not None and engine.running and engine.accepting


class _Watched:
    """The replica's worker as its engine sees it: a lost worker fails its replica before its requests."""

    def __init__(self, replica: Replica, on_lost: Callable[[Replica], None], loop: asyncio.AbstractEventLoop) -> None:
        self.replica = replica
        self.worker = replica.parts.worker
        self.on_lost = on_lost
        self.loop = loop

    def add_sequence(self, request_id, prompt_ids, params):
        return self.worker.add_sequence(request_id, prompt_ids, params)

    def remove_sequence(self, request_id: str) -> None:
        self.worker.remove_sequence(request_id)

    def execute(self, plan):
        if self.replica.failed:
            raise WorkerLost(self.replica.failure)
        try:
            return self.worker.execute(plan)
        except WorkerLost as error:
            self.replica.failure = str(error)  # before the engine fails this step's requests
            self.loop.call_soon_threadsafe(self.on_lost, self.replica)
            raise


class _ReplicaObserver:
    """Counts per replica and passes on to the app's observer, except requests that will move elsewhere."""

    def __init__(self, replica: Replica, observer: EngineObserver) -> None:
        self.replica = replica
        self.observer = observer

    def step_done(self, plan, result, seconds: float) -> None:
        self.replica.stats.steps["ok" if result is not None else "failed"] += 1
        self.observer.step_done(plan, result, seconds)

    def request_done(self, generation: Generation) -> None:
        moving = self.replica.failed and not generation.timing.token_times
        outcome = "moved" if moving else "finished" if generation.finish_reason is not None else "failed"
        self.replica.stats.requests[(generation.request.tier, outcome)] += 1
        if not moving:
            self.observer.request_done(generation)


class CombinedScheduler:
    """`engine.scheduler` for /metrics: the serving replicas' schedulers as one."""

    def __init__(self, replicas: ReplicaSet) -> None:
        self._replicas = replicas

    def stats(self) -> SchedulerStats:
        live = [r for r in self._replicas.replicas if r.up] or self._replicas.replicas
        return combine_stats([r.parts.scheduler.stats() for r in live])


class ReplicaSet:
    def __init__(
        self,
        parts: list[ReplicaParts],
        launch: Launch,
        routing: RoutingPolicy,
        observer: EngineObserver,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not parts:
            raise ValueError("a replica set needs at least one replica")
        self.launch = launch
        self.routing = routing
        self.observer = observer
        self.clock = clock
        self.stats = [ReplicaStats() for _ in parts]
        self.replicas = [Replica(i, p, self.stats[i]) for i, p in enumerate(parts)]
        self.scheduler = CombinedScheduler(self)
        self.accepting = True
        self._restarts: set[asyncio.Task] = set()

    # -- what the app uses -------------------------------------------------------

    @property
    def running(self) -> bool:
        """At least one replica's engine loop is alive (liveness; `accepting` says whether it takes requests)."""
        return any(r.engine is not None and not r.failed and r.engine.running for r in self.replicas)

    @property
    def in_flight(self) -> int:
        return sum(r.engine.in_flight for r in self.replicas if r.engine is not None)

    def start(self) -> None:
        for replica in self.replicas:
            self._serve(replica)

    def submit(self, request: GenerationRequest) -> RoutedGeneration:
        if not self.accepting:
            raise EngineStopping("the server is shutting down")
        generation, replica = self.place(request, self.clock())
        return RoutedGeneration(self, generation, replica)

    async def drain(self, grace_seconds: float) -> None:
        self.accepting = False
        for task in self._restarts:
            task.cancel()
        serving = [r.engine for r in self.replicas if r.engine is not None and not r.failed]
        await asyncio.gather(*(engine.drain(grace_seconds) for engine in serving))

    async def close(self) -> None:
        self.accepting = False
        for task in self._restarts:
            task.cancel()
        await asyncio.gather(*self._restarts, return_exceptions=True)
        for replica in self.replicas:
            if replica.engine is not None:
                await replica.engine.close()
            replica.parts.stop()

    def describe(self) -> dict[str, int]:
        return {"replicas": len(self.replicas), "replicas_up": sum(r.up for r in self.replicas)}

    # -- routing -----------------------------------------------------------------

    def place(self, request: GenerationRequest, arrival: float) -> tuple[Generation, Replica]:
        """Submit ``request`` to the best replica that takes it; raises the first refusal if none does."""
        candidates = [replica for replica in self.replicas if replica.up]
        if not candidates:
            down = ", ".join(f"{r.index} ({r.failure or 'starting'})" for r in self.replicas)
            raise ApiError(503, f"no replica is serving: {down}", SHUTTING_DOWN)
        view = Request(
            "routing", request.tier, arrival, len(request.prompt_ids), request.max_new_tokens,
            request.ttft, request.tbt, request.ttlt,
        )  # fmt: skip
        refusal: Exception | None = None
        order = self.routing.rank([r.parts.scheduler for r in candidates], view, self.clock())
        for index in order:
            replica = candidates[index]
            try:
                return replica.engine.submit(request, arrival), replica
            except (AdmissionError, EngineStopping) as error:
                refusal = refusal or error
        raise refusal

    # -- failure and restart ---------------------------------------------------------

    def _serve(self, replica: Replica) -> None:
        loop = asyncio.get_running_loop()
        parts = replica.parts
        core = EngineCore(parts.scheduler, _Watched(replica, self._lost, loop), parts.eos_token_ids, self.clock)
        replica.engine = AsyncEngine(core, observer=_ReplicaObserver(replica, self.observer), clock=self.clock)
        replica.engine.start()

    def _lost(self, replica: Replica) -> None:
        if self.replicas[replica.index] is not replica:
            return
        log.error("replica %d (%s) is lost: %s; replacing it", replica.index, replica.parts.where, replica.failure)
        task = asyncio.get_running_loop().create_task(self._replace(replica))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _replace(self, replica: Replica) -> None:
        await replica.engine.drain(0.0)  # fails what it still held: their generations move or end
        await replica.engine.close()
        replica.parts.stop()
        delay = RESTART_DELAY_SECONDS
        while self.accepting:
            try:
                parts = await self.launch(replica.index)
            except Exception:
                log.exception("replica %d could not be started again; retrying in %.0f s", replica.index, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, MAX_RESTART_DELAY_SECONDS)
                continue
            if not self.accepting:
                parts.stop()
                return
            fresh = Replica(replica.index, parts, replica.stats)
            fresh.stats.restarts += 1
            self.replicas[replica.index] = fresh
            self._serve(fresh)
            log.info("replica %d is serving again (%s)", fresh.index, parts.where)
            return

    def report_lost(self, generation: Generation) -> None:
        """A request that could not move after its replica failed: count its failure after all."""
        self.observer.request_done(generation)
