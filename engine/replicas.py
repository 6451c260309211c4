"""The engine the HTTP layer holds: one or more replicas behind one front, each with its own scheduler.

A replica is a scheduler, an `EngineCore` and an `AsyncEngine` in this
process, and a worker in another (a local subprocess, or a Ray actor on any
node): schedulers are cheap and decide every step, so only the plan and the
sampled tokens cross the process boundary. One server is a set of one, so
/info, /metrics and /ready never ask which kind they hold.

Routing: a new request goes to the replica the routing policy ranks first
(`qos.routing`: the most predicted slack by default); one that refuses it
(its scheduler's admission) passes it to the next.

Failure: a step whose worker is lost (`WorkerLost`) stops that replica's
loop and fails everything it held back to this set, which decides for each
request: one that had produced no token moves to another replica (same seed,
same arrival, so the same tokens and deadlines) at most once, one that had
streamed tokens ends with an error that says why. The lost replica is
replaced in the background (a fresh worker, scheduler and loop, from
``launch``) and takes requests again once it has loaded; meanwhile the server
stays up (/health 200) and /ready says no replica serves.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from niyama.qos.errors import AdmissionError
from niyama.qos.plan import Plan, StepResult
from niyama.qos.routing import RoutingPolicy
from niyama.qos.scheduler import Scheduler
from niyama.qos.stats import SchedulerStats, combine_stats

from .core import EngineCore
from .generation import Generation
from .loop import AsyncEngine
from .protocol import Worker, WorkerInfo
from .request import GenerationRequest

log = logging.getLogger("niyama.replicas")

RESTART_DELAY_SECONDS = 1.0  # first wait after a failed relaunch; doubles up to the maximum
MAX_RESTART_DELAY_SECONDS = 30.0
MAX_MOVES = 1  # a request whose own step kills workers would otherwise take every replica down in turn


class EngineStopping(RuntimeError):
    """The server is shutting down and takes no new requests."""


class NoReplicaServing(RuntimeError):
    """Every replica is down or restarting (HTTP 503)."""


class EngineObserver(Protocol):
    """What /metrics hears from the engine."""

    def step_done(self, plan: Plan, result: StepResult | None, seconds: float, schedule_seconds: float) -> None: ...

    def token_done(self, generation: Generation, gap: float | None) -> None: ...

    def request_done(self, generation: Generation) -> None: ...


class Unobserved:
    """The observer of an engine nobody watches (benchmarks, tests); the app sets its `Metrics`."""

    def step_done(self, plan: Plan, result: StepResult | None, seconds: float, schedule_seconds: float) -> None:
        return None

    def token_done(self, generation: Generation, gap: float | None) -> None:
        return None

    def request_done(self, generation: Generation) -> None:
        return None


def _nothing() -> None:
    return None


@dataclass
class ReplicaParts:
    """A launched replica before it serves: its scheduler, its worker, and how to free what it holds."""

    scheduler: Scheduler
    worker: Worker
    eos_token_ids: frozenset[int]
    stop: Callable[[], None] = _nothing  # end the worker's process or actor
    where: str = "in-process"
    info: WorkerInfo | None = None


Launch = Callable[[int], Awaitable[ReplicaParts]]  # replica index -> a fresh replica


@dataclass
class ReplicaStats:
    """What one replica slot has done since start-up, across restarts (the /metrics counters)."""

    restarts: int = 0
    requests: Counter = field(default_factory=Counter)  # (tier, outcome) -> count; outcome: slo ENDS or moved
    steps: Counter = field(default_factory=Counter)  # "ok" / "failed" -> count


class Replica:
    """One incarnation of a replica slot, and the listener of its loop: once lost it stays lost."""

    def __init__(self, index: int, parts: ReplicaParts, stats: ReplicaStats, owner: ReplicaSet) -> None:
        self.index = index
        self.parts = parts
        self.stats = stats
        self.owner = owner
        self.engine = AsyncEngine(EngineCore(parts.scheduler, parts.worker, parts.eos_token_ids, owner.clock), self,
                                  owner.clock)  # fmt: skip

    @property
    def failure(self) -> str | None:
        return self.engine.lost

    @property
    def up(self) -> bool:
        return self.engine.lost is None and self.engine.running and self.owner.accepting

    # -- LoopListener ----------------------------------------------------------

    def step_done(self, plan: Plan, result: StepResult | None, seconds: float, schedule_seconds: float) -> None:
        self.stats.steps["ok" if result is not None else "failed"] += 1
        self.owner.observer.step_done(plan, result, seconds, schedule_seconds)

    def token_done(self, generation: Generation, gap: float | None) -> None:
        self.owner.observer.token_done(generation, gap)

    def request_done(self, generation: Generation) -> None:
        self.stats.requests[(generation.request.tier, generation.ended_as)] += 1
        self.owner.observer.request_done(generation)

    def request_failed(self, generation: Generation, error: str) -> None:
        why = error if self.failure is None else self.owner.move(generation, self)
        if why is None:  # it moved to another replica
            return
        generation.fail(why, self.owner.clock())
        self.request_done(generation)

    def worker_lost(self, engine: AsyncEngine) -> None:
        self.owner.lost(self)


class ReplicaSet:
    def __init__(
        self,
        parts: list[ReplicaParts],
        launch: Launch,
        routing: RoutingPolicy,
        *,
        observer: EngineObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not parts:
            raise ValueError("a replica set needs at least one replica")
        self.launch = launch
        self.routing = routing
        self.observer: EngineObserver = observer or Unobserved()
        self.clock = clock
        self.accepting = True
        self.slot_stats = [ReplicaStats() for _ in parts]
        self.replicas = [Replica(i, p, self.slot_stats[i], self) for i, p in enumerate(parts)]
        self._ids = itertools.count()
        self._started = False
        self._closed = False
        self._restarts: set[asyncio.Task] = set()

    # -- what the app uses -------------------------------------------------------

    @property
    def running(self) -> bool:
        """Liveness: started and not closed; a replica being replaced still counts (`serving` says more)."""
        return self._started and not self._closed

    @property
    def serving(self) -> int:
        return sum(r.up for r in self.replicas)

    @property
    def in_flight(self) -> int:
        return sum(len(r.engine.generations) for r in self.replicas)

    def start(self) -> None:
        for replica in self.replicas:
            replica.engine.start()
        self._started = True

    def submit(self, request: GenerationRequest) -> Generation:
        """Queue a validated request on the best replica; raises EngineStopping, NoReplicaServing or AdmissionError."""
        if not self.accepting:
            raise EngineStopping("the server is shutting down")
        return self.place(request.submitted(f"req-{next(self._ids)}", self.clock()))

    def stats(self) -> SchedulerStats:
        """The serving replicas' schedulers as one (every replica's while none serves)."""
        live = [r for r in self.replicas if r.up] or self.replicas
        return combine_stats([r.parts.scheduler.stats() for r in live])

    def describe(self) -> dict[str, object]:
        """/info's replica fields: how many there are, how many serve, and where each one runs."""
        return {
            "replicas": len(self.replicas),
            "replicas_up": self.serving,
            "workers": [
                {"replica": r.index, "where": r.parts.where, "pid": r.parts.info.pid if r.parts.info else None,
                 "up": r.up}
                for r in self.replicas
            ],
        }  # fmt: skip

    async def drain(self, grace_seconds: float) -> None:
        """Stop taking requests, let running ones finish for ``grace_seconds``, then fail the rest."""
        self.accepting = False
        for task in self._restarts:
            task.cancel()
        deadline = self.clock() + grace_seconds
        while self.in_flight and self.clock() < deadline:
            await asyncio.sleep(0.05)
        for replica in self.replicas:
            replica.engine.fail_all("the server shut down before this request finished")

    async def close(self) -> None:
        self.accepting = False
        self._closed = True
        for task in self._restarts:
            task.cancel()
        await asyncio.gather(*self._restarts, return_exceptions=True)
        for replica in self.replicas:
            await replica.engine.close()
            await asyncio.to_thread(replica.parts.stop)

    # -- routing -----------------------------------------------------------------

    def place(self, request: GenerationRequest, generation: Generation | None = None) -> Generation:
        """Submit to the best replica that takes it; raises the first refusal if none does."""
        candidates = [replica for replica in self.replicas if replica.up]
        if not candidates:
            down = ", ".join(f"{r.index} ({r.failure or 'starting'})" for r in self.replicas)
            raise NoReplicaServing(f"no replica is serving: {down}")
        refusal: AdmissionError | None = None
        for index in self.routing.rank([r.parts.scheduler for r in candidates], request, self.clock()):
            replica = candidates[index]
            try:
                placed = replica.engine.submit(request, generation)
            except AdmissionError as error:
                refusal = refusal or error
                continue
            placed.replica = replica.index
            return placed
        raise refusal

    # -- failure and restart ---------------------------------------------------------

    def move(self, generation: Generation, lost: Replica) -> str | None:
        """Resubmit a request failed out of a lost replica: None once it moved, else why it cannot."""
        why = f"replica {lost.index} failed ({lost.failure})"
        if generation.tokens:
            return f"{why} after this request had produced {generation.tokens} tokens; it cannot be resumed"
        if generation.moves >= MAX_MOVES:
            return f"{why}, and this request had already moved from a failed replica"
        try:
            self.place(generation.request, generation)
        except (AdmissionError, NoReplicaServing, EngineStopping) as refusal:
            return f"{why} before this request produced a token, and no other replica took it: {refusal}"
        generation.moves += 1
        lost.stats.requests[(generation.request.tier, "moved")] += 1
        return None

    def lost(self, replica: Replica) -> None:
        if self.replicas[replica.index] is not replica or self._closed:
            return
        log.error("replica %d (%s) is lost: %s; replacing it", replica.index, replica.parts.where, replica.failure)
        task = asyncio.get_running_loop().create_task(self._replace(replica))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _replace(self, replica: Replica) -> None:
        await replica.engine.close()
        await asyncio.to_thread(replica.parts.stop)
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
            fresh = Replica(replica.index, parts, replica.stats, self)
            fresh.stats.restarts += 1
            self.replicas[replica.index] = fresh
            fresh.engine.start()
            log.info("replica %d is serving again (%s)", fresh.index, parts.where)
            return
