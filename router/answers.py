"""Running admitted requests into answers, shared by the TGI and OpenAI routes.

`stream_answer` turns live generations into one SSE body: each generation's
batches go through its formatter; several generations (a completion request
with a list of prompts) are interleaved as their tokens come. An engine
failure becomes one error event (TGI's envelope) and ends the stream.
`complete_answer` runs a request to its end for a JSON answer, aborting it if
the client leaves first. Both take a request that `Inference.start_admitted`
started and close it (generations aborted, permits released) whatever happens.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from starlette.requests import Request

from niyama.engine.api import GenerationHandle
from niyama.engine.generation import GenerationError

from .errors import CLIENT_STALLED, INCOMPLETE, ApiError, as_event, generation_error
from .inference import Admitted, Sequence, best_first
from .intake import Intake, server
from .streaming import KEEPALIVE, EventStreamResponse, TokenEvent, TokenPipeline, run_until_disconnect, token_batches
from .validation import ValidRequest


@dataclass
class Run:
    """One live generation and how its batches become bytes."""

    generation: GenerationHandle
    pipeline: TokenPipeline
    format: Callable[[list[TokenEvent]], bytes]


async def _single(run: Run) -> AsyncIterator[bytes]:
    async for batch in token_batches(run.generation, run.pipeline):
        yield KEEPALIVE if batch is None else run.format(batch)


async def _merged(runs: list[Run]) -> AsyncIterator[bytes]:
    queue: asyncio.Queue = asyncio.Queue()
    finished = object()

    async def pump(run: Run) -> None:
        try:
            async for chunk in _single(run):
                queue.put_nowait(chunk)
        except GenerationError as error:
            queue.put_nowait(error)
        finally:
            queue.put_nowait(finished)

    tasks = [asyncio.ensure_future(pump(run)) for run in runs]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is finished:
                remaining -= 1
            elif isinstance(item, GenerationError):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def stream_answer(
    request: Request,
    runs: list[Run],
    admitted: Admitted,
    headers: dict[str, str],
    on_success: Callable[[], None],
    tail: Callable[[], bytes] | None = None,
) -> EventStreamResponse:
    """The SSE answer for ``runs`` (the generations of ``admitted``); ``tail`` makes the bytes sent after a
    successful end (usage, [DONE])."""
    metrics = server(request).metrics

    async def chunks() -> AsyncIterator[bytes]:
        source = _single(runs[0]) if len(runs) == 1 else _merged(runs)
        try:
            async for chunk in source:
                yield chunk
        except GenerationError as error:
            metrics.request_failed("generation")
            yield as_event(generation_error(str(error)))
            return
        if any(run.pipeline.finish_reason is None for run in runs):
            metrics.request_failed(INCOMPLETE)
            yield as_event(ApiError(500, "Incomplete generation stream", INCOMPLETE))
            return
        on_success()
        if tail is not None:
            yield tail()

    async def close() -> None:
        await admitted.close()
        if response.stalled:
            metrics.request_failed(CLIENT_STALLED)

    response = EventStreamResponse(chunks(), headers, close, server(request).settings.stream_send_timeout)
    return response


async def complete_answer(request: Request, valids: list[ValidRequest], intake: Intake) -> list[list[Sequence]]:
    """Each of ``valids`` run to its end (its ``best_of`` sequences best first), side by side.

    Aborted if the client disconnects first.
    """
    inference = server(request).inference
    each = [valid for valid in valids for _ in range(valid.best_of)]
    admitted = await inference.start_admitted(intake.caller, each, intake.tier, intake.targets)
    try:
        sequences = await run_until_disconnect(request.receive, inference.run_all(admitted.started))
    finally:
        await admitted.close()
    answers, first = [], 0
    for valid in valids:
        group = sequences[first : first + valid.best_of]  # type: ignore[index]
        answers.append(best_first(group))
        first += valid.best_of
    return answers


def stream_headers(intake: Intake, inputs_chars: int, compute_type: str) -> dict[str, str]:
    return {"x-compute-type": compute_type, "x-compute-characters": str(inputs_chars), "x-qos-tier": intake.tier}
