"""One request in flight, as the routes see it: iterate it for tokens, `aclose()` to abort it.

A `Generation` lives from submission to its end whichever replica serves it:
the replica set points it at the engine that holds it now, and moves it when
that replica is lost before it produced a token. It keeps its SLO account as
tokens arrive (the O(1) `qos.slo.SloTracker`, the same the simulator keeps),
not a list of token times.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from niyama.qos.slo import CANCELLED, FAILED, FINISHED, SloTracker
from niyama.qos.tiers import SloTargets

from .request import GenerationRequest, TokenOutput


class GenerationError(RuntimeError):
    """The request failed inside the engine (a failed step, a refused prompt, a lost worker, shutdown)."""


_END = object()


class Generation:
    def __init__(self, request: GenerationRequest, targets: SloTargets) -> None:
        self.request = request
        self.slo = SloTracker(targets, request.arrival)
        self.admitted: float | None = None  # first step that computed any of it
        self.cached_tokens = 0  # prompt tokens it took from the prefix cache (as of its first token)
        self.finished: float | None = None
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.cancelled = False  # its client left: ended without a finish reason, yet not a failure
        self.moves = 0  # times it moved to another replica
        self.replica: int | None = None  # the replica slot serving it
        self._abort: Callable[[str, str | None], None] | None = None  # the holding engine's abort
        self._queue: asyncio.Queue = asyncio.Queue()

    @property
    def request_id(self) -> str:
        return self.request.id

    @property
    def seed(self) -> int | None:
        return self.request.params.seed if self.request.params.samples else None

    @property
    def tokens(self) -> int:
        return self.slo.tokens

    @property
    def done(self) -> bool:
        return self.finished is not None

    @property
    def ended_as(self) -> str | None:
        """How it ended, in `qos.slo`'s terms (finished, cancelled, failed) for `is_miss`; None while it runs."""
        if not self.done:
            return None
        if self.finish_reason is not None:
            return FINISHED
        return CANCELLED if self.cancelled else FAILED

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
        if not self.done and self._abort is not None:
            self._abort(self.request_id, finish_reason)

    # -- the engine's side ---------------------------------------------------------

    def push(self, output: TokenOutput, now: float) -> float | None:
        """Deliver a token; the gap since the previous one (None for the first)."""
        gap = self.slo.record(now)
        self._queue.put_nowait(output)
        if output.finish_reason is not None:
            self.end(now, output.finish_reason)
        return gap

    def cancel(self, now: float) -> None:
        """Its client left before it finished."""
        self.cancelled = True
        self.fail("the request was cancelled", now)

    def fail(self, error: str, now: float) -> None:
        self.error = error
        self.end(now)

    def end(self, now: float, finish_reason: str | None = None) -> None:
        self.finish_reason = finish_reason
        self.finished = now
        self._queue.put_nowait(_END)
