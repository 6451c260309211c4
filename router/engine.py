"""The engine loop: one asyncio task owns the scheduler and the clock.

Requests come in as `Generation`s, async iterators of tokens. The loop plans
each step on the event loop, runs the forward pass on a single worker thread
(so /health, /metrics and new requests are answered during a long step), and
hands each token to its generation. Closing a generation early (a client that
disconnects, a stop sequence) aborts the request and frees its KV blocks at
once; a step that raises fails only the requests it was computing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from niyama.qos.plan import Plan, StepResult

from .engine_core import EngineCore, GenerationRequest, StepOutputs, TokenOutput

log = logging.getLogger("niyama.engine")


class GenerationError(RuntimeError):
    """The request failed inside the engine (a failed step, a refused prompt, shutdown)."""


class EngineStopping(RuntimeError):
    """The server is shutting down and takes no new requests."""


@dataclass
class Timing:
    """Monotonic-clock times of one request's life."""

    arrival: float
    admitted: float | None = None  # first step that computed any of it
    token_times: list[float] = field(default_factory=list)
    finished: float | None = None


_END = object()


class Generation:
    """One request in flight: iterate it for `TokenOutput`s; `aclose()` aborts it."""

    def __init__(self, engine: AsyncEngine, request_id: str, request: GenerationRequest, arrival: float) -> None:
        self.engine = engine
        self.request_id = request_id
        self.request = request
        self.timing = Timing(arrival)
        self.finish_reason: str | None = None
        self.error: str | None = None
        self._queue: asyncio.Queue = asyncio.Queue()

    @property
    def seed(self) -> int | None:
        return self.request.params.seed if self.request.params.samples else None

    @property
    def done(self) -> bool:
        return self.timing.finished is not None

    def __aiter__(self) -> Generation:
        return self

    async def __anext__(self) -> TokenOutput:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # stay exhausted
            if self.error is not None:
                raise GenerationError(self.error)
            raise StopAsyncIteration
        return item

    def take_ready(self) -> list[TokenOutput]:
        """The outputs already delivered, without waiting: a consumer that fell behind sends them in one write."""
        ready = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is _END:
                self._queue.put_nowait(_END)  # the end marker is always last: put back, it stays last
                break
            ready.append(item)
        return ready

    async def aclose(self, finish_reason: str | None = None) -> None:
        """Abort: the request's KV blocks are freed at once.

        With a ``finish_reason`` (the router matched a stop sequence) the
        generation ends as finished with that reason; without one (a client
        that left) it ends as cancelled.
        """
        if not self.done:
            self.engine.abort(self.request_id, finish_reason)

    def _push(self, output: TokenOutput, now: float) -> None:
        self.timing.token_times.append(now)
        self._queue.put_nowait(output)
        if output.finish_reason is not None:
            self.finish_reason = output.finish_reason
            self._end(now)

    def _fail(self, error: str, now: float) -> None:
        self.error = error
        self._end(now)

    def _end(self, now: float) -> None:
        self.timing.finished = now
        self._queue.put_nowait(_END)


class EngineObserver(Protocol):
    """What /metrics hears from the loop."""

    def step_done(self, plan: Plan, result: StepResult | None, seconds: float) -> None: ...

    def request_done(self, generation: Generation) -> None: ...


class AsyncEngine:
    def __init__(
        self,
        core: EngineCore,
        *,
        observer: EngineObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.core = core
        self.observer = observer
        self.clock = clock
        self._generations: dict[str, Generation] = {}
        self._ids = itertools.count()
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="niyama-worker")
        self._task: asyncio.Task | None = None
        self.accepting = True
        self.step_in_flight_since: float | None = None

    @property
    def scheduler(self):
        return self.core.scheduler

    @property
    def in_flight(self) -> int:
        return len(self._generations)

    @property
    def running(self) -> bool:
        """The loop task is alive (health checks): started, and neither crashed nor closed."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="niyama-engine-loop")

    def submit(self, request: GenerationRequest, arrival: float | None = None) -> Generation:
        """Queue a request (on the event loop); raises the scheduler's AdmissionError or EngineStopping.

        ``arrival`` (default now) keeps a request's deadlines when it moves here from a failed replica.
        """
        if not self.accepting:
            raise EngineStopping("the server is shutting down")
        request_id = f"req-{next(self._ids)}"
        arrival = self.clock() if arrival is None else arrival
        request = self.core.add(request_id, request, arrival)
        generation = Generation(self, request_id, request, arrival)
        self._generations[request_id] = generation
        self._wake.set()
        return generation

    def abort(self, request_id: str, finish_reason: str | None = None) -> None:
        generation = self._generations.pop(request_id, None)
        self.core.abort(request_id)
        self._wake.set()  # an idle loop settles the worker
        if generation is not None and not generation.done:
            if finish_reason is None:
                generation._fail("the request was cancelled", self.clock())
            else:
                generation.finish_reason = finish_reason
                generation._end(self.clock())
            self._report(generation)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.core.has_work:
                self.core.settle()
                self._wake.clear()
                await self._wake.wait()
                continue
            plan, outputs = self.core.prepare()
            self._dispatch(outputs)
            if plan.is_empty:
                await asyncio.sleep(0.001)
                continue
            now = self.clock()
            for chunk in plan.chunks:
                generation = self._generations.get(chunk.request_id)
                if generation is not None and generation.timing.admitted is None:
                    generation.timing.admitted = now
            self.step_in_flight_since = now
            try:
                result = await loop.run_in_executor(self._executor, self.core.worker.execute, plan)
            except Exception as error:  # noqa: BLE001 - one failed step must not stop the server
                log.exception("step failed; failing the %d requests it was computing", len(plan.chunks))
                self._observe_step(plan, None, now)
                self._dispatch(self.core.fail(plan, error))
                continue
            finally:
                self.step_in_flight_since = None
            self._observe_step(plan, result, now)
            self._dispatch(self.core.complete(result))

    def _observe_step(self, plan: Plan, result: StepResult | None, started: float) -> None:
        if self.observer is not None:
            self.observer.step_done(plan, result, self.clock() - started)

    def _dispatch(self, outputs: StepOutputs) -> None:
        now = self.clock()
        for output in outputs.tokens:
            generation = self._generations.get(output.request_id)
            if generation is None:
                continue
            generation._push(output, now)
            if generation.done:
                del self._generations[output.request_id]
                self._report(generation)
        for request_id, error in outputs.failed.items():
            generation = self._generations.pop(request_id, None)
            if generation is not None:
                generation._fail(error, now)
                self._report(generation)

    def _report(self, generation: Generation) -> None:
        if self.observer is not None:
            self.observer.request_done(generation)

    async def drain(self, grace_seconds: float) -> None:
        """Stop taking requests, let running ones finish for ``grace_seconds``, then fail the rest."""
        self.accepting = False
        deadline = self.clock() + grace_seconds
        while self._generations and self.clock() < deadline:
            await asyncio.sleep(0.05)
        now = self.clock()
        for request_id, generation in list(self._generations.items()):
            self.core.abort(request_id)
            generation._fail("the server shut down before this request finished", now)
            self._report(generation)
        self._generations.clear()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True, cancel_futures=True)
