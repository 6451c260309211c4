"""One streamed request, timed from the client's side.

Each request opens its own connection (no pooling: a stream that waits in
a shared connection's queue would be timed for the client's queue, not the
server's). The send time is taken just before the request is written and
each token's time when its event is read, both with ``time.perf_counter``;
tokens that arrive in one read share that read's time, as a user would see
them. Anything that goes wrong (a refused connection, an HTTP error, an
error event, a stream that ends without a finish reason) is kept in the
record's ``error`` and counts as a miss.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp
import orjson

from .apis import Api
from .sse import DONE, aevents
from .workload import BenchRequest

TIER_HEADER = "x-qos-tier"
clock = time.perf_counter  # module-level so tests can run the client on a fake clock


@dataclass
class Record:
    """What happened to one request; times are ``time.perf_counter`` seconds."""

    request: BenchRequest
    url: str
    prompt_tokens: int  # as the tokenizer counted the prompt sent
    sent: float | None = None
    token_times: list[float] = field(default_factory=list)
    reported_tokens: int | None = None  # the server's count, when it gives one
    finish_reason: str | None = None
    error: str | None = None
    done: bool = False

    @property
    def ok(self) -> bool:
        return self.done and self.error is None and bool(self.token_times)


@dataclass(frozen=True)
class Target:
    """Where a request goes: a base URL speaking ``api``."""

    url: str
    api: Api
    model: str | None = None  # OpenAI's `model` field
    api_key: str | None = None
    ignore_eos: bool = True

    def headers(self, tier: str) -> dict[str, str]:
        headers = {"content-type": "application/json", TIER_HEADER: tier}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers


def new_session(timeout: float) -> aiohttp.ClientSession:
    """A session that never pools connections: one per stream."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=10))


async def stream(session: aiohttp.ClientSession, target: Target, prompt: str, record: Record) -> Record:
    """Send ``record.request`` with ``prompt`` and fill ``record`` as the answer streams in."""
    request = record.request
    body = orjson.dumps(target.api.body(prompt, request.output_tokens, target.ignore_eos, target.model))
    try:
        record.sent = clock()
        headers = target.headers(request.tier)
        async with session.post(target.url + target.api.path, data=body, headers=headers) as answer:
            if answer.status != 200:
                record.error = f"HTTP {answer.status}: {_error_text(await answer.read())}"
                return record
            await _read_events(answer, target.api, record)
    except asyncio.CancelledError:
        record.error = record.error or "cancelled (run stopped)"
        raise
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as error:  # ValueError: a bad event
        record.error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    finally:
        record.done = True
    return record


async def _read_events(answer: aiohttp.ClientResponse, api: Api, record: Record) -> None:
    finished = False
    async for data in aevents(answer.content):
        now = clock()
        if data == DONE:
            break
        info = api.interpret(orjson.loads(data))
        record.token_times.extend([now] * info.tokens)
        if info.reported_tokens is not None:
            record.reported_tokens = info.reported_tokens
        if info.error is not None:
            record.error = info.error
            return
        if info.finish_reason is not None:
            record.finish_reason = info.finish_reason
            finished = True
    if not finished:
        record.error = "the stream ended without a finish reason"


def _error_text(raw: bytes) -> str:
    """An error answer's message: the JSON envelope's ``error`` (TGI, OpenAI), else the first 200 bytes."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode("utf-8", "replace").strip() or "(empty body)"
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        error = error.get("message", error)
    return str(error)[:300]
