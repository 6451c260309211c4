"""The one token pipeline every route shares: detokenize, then stop sequences, then (elsewhere) format.

`TokenPipeline` turns the engine's `TokenOutput`s of one generation into
`TokenEvent`s: the token's own text (TGI's `token.text`), the new *visible*
text (special tokens left out, stop-sequence candidates held back) and the
finish reason. `token_batches` drives it over a live `Generation`, hands out
whatever is ready in one batch (at most one batch per 5 ms: when tokens come
faster, one write carries several), and closes the generation when a stop sequence matched, so its KV
blocks are freed at once. The formatters (`tgi_format`, `openai_format`) only
turn events into JSON.

`EventStreamResponse` sends an SSE body and watches the connection: a client
that leaves cancels the stream at once, whatever it is waiting on, and the
generations are aborted by the stream's own cleanup. A client that stays
connected but reads nothing is bounded too: uvicorn stops a `send` once
64 KiB wait in the connection's buffer, the tokens generated meanwhile wait
in the generation's queue (at most its `max_new_tokens`), and a send that
waits longer than `--stream-send-timeout` aborts the request like a
disconnect, so a stalled reader cannot hold its KV blocks and concurrency
permit for ever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from starlette.types import Receive, Scope, Send

from niyama.engine.api import GenerationHandle
from niyama.engine.request import TokenOutput

from .detokenizer import IncrementalDetokenizer
from .errors import ClientDisconnected
from .stop_sequences import StopMatcher
from .tokenizer import TextTokenizer

log = logging.getLogger("niyama.router")

STOP_SEQUENCE = "stop_sequence"
KEEPALIVE_SECONDS = 15.0
# A stream writes at most once per interval. Each write is a system call
# (~15 us); when tokens come faster than this (a small model, a fast GPU) they
# go out together, and a token is delayed by at most the interval, far below
# any time-between-tokens target.
MIN_BATCH_INTERVAL = 0.005
KEEPALIVE = b":\n\n"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


@dataclass(slots=True)
class TokenEvent:
    index: int  # 1-based, TGI's `index`
    output: TokenOutput
    text: str  # this token's own text, special tokens included
    special: bool
    delta: str  # visible text this token releases
    finish_reason: str | None  # on the last event: length, eos_token or stop_sequence

    @property
    def token_id(self) -> int:
        return self.output.token.token_id

    @property
    def logprob(self) -> float:
        return self.output.token.logprob


class TokenPipeline:
    """Detokenize and apply stop sequences for one generation."""

    def __init__(self, tokenizer: TextTokenizer, prompt_ids: Sequence[int], stop: Sequence[str]) -> None:
        self._tokenizer = tokenizer
        self._detokenizer = IncrementalDetokenizer(tokenizer.decode, prompt_ids)
        self._stops = StopMatcher(stop)
        self.count = 0
        self.visible = ""  # the generated text without special tokens, up to (not including) a matched stop
        self.stop: str | None = None  # the stop sequence that ended the generation
        self.finish_reason: str | None = None

    def push(self, output: TokenOutput) -> TokenEvent:
        self.count += 1
        token_id = output.token.token_id
        special = self._tokenizer.is_special(token_id)
        text = self._detokenizer.add(token_id)
        finish = output.finish_reason
        delta = ""
        if not special:
            delta, self.stop = self._stops.feed(text)
        if finish is None and self.stop is not None:
            finish = STOP_SEQUENCE  # the engine's own reason wins on the same token, as in TGI
        if finish is not None and self.stop is None:
            tail = self._detokenizer.flush()  # an unfinished character at the very end
            text += tail
            if not special:
                extra, self.stop = self._stops.feed(tail)
                delta += extra if self.stop is not None else extra + self._stops.flush()
        self.finish_reason = finish
        self.visible += delta
        return TokenEvent(self.count, output, text, special, delta, finish)

    def text_with_stop(self) -> str:
        """TGI's `generated_text`: the visible text and the stop sequence that ended it."""
        return self.visible + (self.stop or "")


async def token_batches(
    generation: GenerationHandle, pipeline: TokenPipeline
) -> AsyncIterator[list[TokenEvent] | None]:
    """Events of ``generation`` in batches of whatever is ready; ``None`` after 15 s of silence (keep-alive).

    Ends after the last token; raises `GenerationError` if the engine fails
    the request. Closing this iterator early aborts the generation.
    """
    finished = False
    last_batch = 0.0
    try:
        while True:
            wait = last_batch + MIN_BATCH_INTERVAL - time.monotonic()
            if wait > 0:  # tokens come faster than a reader needs them: collect a few, one write for all
                await asyncio.sleep(wait)
            outputs = generation.take_ready()
            if not outputs:
                try:
                    async with asyncio.timeout(KEEPALIVE_SECONDS):
                        outputs = [await anext(generation)]
                except TimeoutError:
                    yield None
                    continue
                except StopAsyncIteration:
                    finished = True
                    return
                outputs += generation.take_ready()
            last_batch = time.monotonic()
            events = []
            for output in outputs:
                event = pipeline.push(output)
                events.append(event)
                if event.finish_reason is not None:
                    break
            if pipeline.finish_reason is not None:
                finished = True
                if pipeline.finish_reason == STOP_SEQUENCE:
                    await generation.aclose(STOP_SEQUENCE)
                yield events
                return
            yield events
    finally:
        if not finished:
            await generation.aclose()


class ClientStalled(Exception):
    """The client read nothing for the stream's send timeout."""


class EventStreamResponse:
    """An SSE answer (status 200) whose body is ``chunks``; stops the moment the client disconnects or stalls.

    ``on_close`` always runs at the end (whether the body was sent, failed, or
    never started): it aborts what is left of the generations and gives the
    concurrency permits back. ``stalled`` tells it that the client stopped
    reading for ``send_timeout`` seconds.
    """

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        headers: dict[str, str],
        on_close: Callable[[], Awaitable[None]],
        send_timeout: float = 30.0,
    ) -> None:
        self.chunks = chunks
        self.on_close = on_close
        self.send_timeout = send_timeout
        self.stalled = False
        self.headers = [(b"content-type", b"text/event-stream")] + [
            (name.lower().encode(), value.encode()) for name, value in {**SSE_HEADERS, **headers}.items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        send = self._bounded(send)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            await run_until_disconnect(receive, self._send_body(send))
        except ClientDisconnected:
            pass
        except ClientStalled:
            self.stalled = True
            log.warning("a client read nothing for %.0f s: its stream is aborted", self.send_timeout)
        finally:
            await self.on_close()

    def _bounded(self, send: Send) -> Send:
        async def bounded(message: dict) -> None:
            try:
                async with asyncio.timeout(self.send_timeout):
                    await send(message)
            except TimeoutError:
                raise ClientStalled from None

        return bounded

    async def _send_body(self, send: Send) -> None:
        try:
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await self.chunks.aclose()  # type: ignore[attr-defined]


async def wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def run_until_disconnect(receive: Receive, work: Awaitable[object]) -> object:
    """Await ``work``; if the client disconnects first, cancel it (its cleanup aborts the generations)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_for_disconnect(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        raise ClientDisconnected
    return task.result()


def sse(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"
