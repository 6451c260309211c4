"""One replica's engine loop: an asyncio task that owns its scheduler, its clock and its worker calls.

Each step is planned on the event loop and executed on a single step thread
(the worker itself runs in another process, so that thread only waits on a
pipe or a Ray call), so /health, /metrics and new requests are answered
during a long step. Closing a generation early (a client that disconnects, a
stop sequence) aborts the request and frees its KV blocks at once; a step
that raises fails only the requests it was computing; a lost worker
(`WorkerLost`) stops this loop, and everything it held goes back to the
replica set, which moves or fails each request and starts a new replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from niyama.qos.plan import Plan, StepResult

from .core import EngineCore, StepOutputs
from .generation import Generation
from .protocol import WorkerLost
from .request import GenerationRequest

log = logging.getLogger("niyama.engine")


class LoopListener(Protocol):
    """What a loop tells the replica set around it."""

    def step_done(self, plan: Plan, result: StepResult | None, seconds: float, schedule_seconds: float) -> None:
        """A step ended (``result`` None: it failed) after ``seconds``; planning it took ``schedule_seconds``."""

    def token_done(self, generation: Generation, gap: float | None) -> None: ...

    def request_done(self, generation: Generation) -> None: ...

    def request_failed(self, generation: Generation, error: str) -> None: ...

    def worker_lost(self, engine: AsyncEngine) -> None: ...


class AsyncEngine:
    def __init__(self, core: EngineCore, listener: LoopListener, clock: Callable[[], float]) -> None:
        self.core = core
        self.listener = listener
        self.clock = clock
        self.generations: dict[str, Generation] = {}
        self.lost: str | None = None  # why the worker was lost; the loop has stopped
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="niyama-step")
        self._task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        """The loop task is alive: started, and neither crashed, lost nor closed."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="niyama-engine-loop")

    def submit(self, request: GenerationRequest, generation: Generation | None = None) -> Generation:
        """Queue a submitted request (its id and arrival set); raises the scheduler's AdmissionError.

        ``generation`` is the request's handle when it moves here from a lost
        replica (same id, seed and arrival, so the same tokens and deadlines).
        """
        request, targets = self.core.add(request)
        if generation is None:
            generation = Generation(request, targets)
        generation.request = request
        generation._abort = self.abort
        self.generations[request.id] = generation
        self._wake.set()
        return generation

    def abort(self, request_id: str, finish_reason: str | None = None) -> None:
        generation = self.generations.pop(request_id, None)
        self.core.abort(request_id)
        self._wake.set()  # an idle loop settles the worker
        if generation is None or generation.done:
            return
        if finish_reason is None:
            generation.cancel(self.clock())
        else:
            generation.end(self.clock(), finish_reason)
        self.listener.request_done(generation)

    def fail_all(self, why: str) -> None:
        """End every request it holds with ``why`` (shutdown past the grace period, a lost worker)."""
        self._dispatch(self.core.fail_all(why))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.core.has_work:
                self.core.settle()
                self._wake.clear()
                await self._wake.wait()
                continue
            planning = time.perf_counter()
            plan, outputs = self.core.prepare()
            planning = time.perf_counter() - planning  # the scheduler's own time, which the next step waits on
            self._dispatch(outputs)
            if plan.is_empty:
                await asyncio.sleep(0.001)
                continue
            now = self.clock()
            for chunk in plan.chunks:
                generation = self.generations.get(chunk.request_id)
                if generation is not None and generation.tokens == 0:  # (re)admitted: what its prefill reused
                    generation.admitted = generation.admitted if generation.admitted is not None else now
                    generation.cached_tokens = self.core.scheduler.cached_tokens(chunk.request_id)
            try:
                result = await loop.run_in_executor(self._executor, self.core.worker.execute, plan)
            except Exception as error:  # noqa: BLE001 - one failed step must not stop the server
                self.listener.step_done(plan, None, self.clock() - now, planning)
                if isinstance(error, WorkerLost):
                    self.lost = str(error)
                    log.error("worker lost: %s; failing the %d requests it held", error, len(self.generations))
                    self.fail_all(f"the worker was lost: {error}")
                    self.listener.worker_lost(self)
                    return
                log.exception("step failed; failing the %d requests it was computing", len(plan.chunks))
                self._dispatch(self.core.fail(plan, error))
                continue
            self.listener.step_done(plan, result, self.clock() - now, planning)
            self._dispatch(self.core.complete(result))

    def _dispatch(self, outputs: StepOutputs) -> None:
        now = self.clock()
        for output in outputs.tokens:
            generation = self.generations.get(output.request_id)
            if generation is None:
                continue
            self.listener.token_done(generation, generation.push(output, now))
            if generation.done:
                del self.generations[output.request_id]
                self.listener.request_done(generation)
        for request_id, error in outputs.failed.items():
            generation = self.generations.pop(request_id, None)
            if generation is not None:
                self.listener.request_failed(generation, error)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)  # a step may still run
