"""A fake TGI/OpenAI server for the bench's tests: streams tokens as told, on a clock the test controls.

It speaks just enough of both protocols (``/health``, ``/info``,
``/v1/models``, ``/tokenize`` with a whitespace tokenizer, ``/generate_stream``
and ``/v1/completions``), refuses unknown tiers with TGI's 422, and can:

- run on a ``FakeClock`` that replaces ``time.perf_counter`` in the client:
  before each event it sets the clock to the event's time and waits until the
  client has read it, so token times are exact, hand-computable numbers;
- fail requests (an error event) when more than ``capacity`` requests came
  within the last second, which gives goodput searches a known ceiling.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import orjson
from aiohttp import web

TIERS = ("interactive", "batch")


class FakeClock:
    """A settable ``perf_counter`` that counts its reads."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now

    async def advance_to(self, time_s: float, send: Callable, payload: bytes) -> None:
        """Set the time, send ``payload``, and wait until the client has read the clock for it."""
        self.now = time_s
        before = self.reads
        await send(payload)
        for _ in range(10_000):
            if self.reads > before:
                return
            await asyncio.sleep(0.001)


def whitespace_spans(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]


class FakeServer:
    def __init__(
        self,
        token_times: Sequence[float] = (),  # seconds after the request came, one per token (with a clock)
        clock: FakeClock | None = None,
        capacity: int | None = None,  # requests per second before errors start
        tiers: Sequence[str] = TIERS,
        max_total_tokens: int = 4096,
    ) -> None:
        self.token_times = tuple(token_times)
        self.clock = clock
        self.capacity = capacity
        self.tiers = tuple(tiers)
        self.max_total_tokens = max_total_tokens
        self.recent: deque[float] = deque()
        self.bodies: list[tuple[str, dict, dict]] = []  # (path, headers, body)
        self.app = web.Application()
        self.app.add_routes([
            web.get("/health", self.health),
            web.get("/info", self.info),
            web.get("/v1/models", self.models),
            web.post("/tokenize", self.tokenize),
            web.post("/generate_stream", self.generate_stream),
            web.post("/v1/completions", self.completions),
        ])  # fmt: skip

    async def health(self, request: web.Request) -> web.Response:
        return web.Response()

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response({"model_id": "fake", "max_total_tokens": self.max_total_tokens})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    async def tokenize(self, request: web.Request) -> web.Response:
        text = (await request.json())["inputs"]
        return web.json_response(
            [{"id": 0, "text": text[a:b], "start": a, "stop": b} for a, b in whitespace_spans(text)]
        )

    async def generate_stream(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, "tgi")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, "openai")

    def _overloaded(self) -> bool:
        now = time.monotonic()
        self.recent.append(now)
        while self.recent and self.recent[0] < now - 1.0:
            self.recent.popleft()
        return self.capacity is not None and len(self.recent) > self.capacity

    async def _stream(self, request: web.Request, api: str) -> web.StreamResponse:
        body = await request.json()
        tier = request.headers.get("x-qos-tier", self.tiers[0])
        self.bodies.append((request.path, dict(request.headers), body))
        if tier not in self.tiers:
            message = f"Input validation error: unknown QoS tier {tier!r}"
            return web.json_response({"error": message, "error_type": "validation"}, status=422)
        count = body["parameters"]["max_new_tokens"] if api == "tgi" else body["max_tokens"]
        overloaded = self._overloaded()
        answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await answer.prepare(request)
        start = self.clock.now if self.clock else 0.0
        if overloaded:
            await answer.write(b'data: {"error":"overloaded","error_type":"generation"}\n\n')
            return answer
        times = self.token_times or (0.0,) * count
        for index, offset in enumerate(times[:count]):
            last = index == count - 1
            payload = b"data: " + orjson.dumps(_event(api, index, last, count)) + b"\n\n"
            if self.clock is not None:
                await self.clock.advance_to(start + offset, answer.write, payload)
            else:
                await answer.write(payload)
        if api == "openai":
            usage = {"choices": [], "usage": {"completion_tokens": count}}
            await answer.write(b"data: " + orjson.dumps(usage) + b"\n\ndata: [DONE]\n\n")
        return answer


def _event(api: str, index: int, last: bool, count: int) -> dict:
    if api == "tgi":
        details = {"finish_reason": "length", "generated_tokens": count} if last else None
        return {"index": index, "token": {"id": 5, "text": " x", "logprob": -1.0, "special": False},
                "generated_text": "x" * count if last else None, "details": details}  # fmt: skip
    return {
        "object": "text_completion",
        "choices": [{"index": 0, "text": " x", "finish_reason": "length" if last else None}],
    }


class ThreadedFake:
    """``FakeServer`` on 127.0.0.1 in a thread with its own loop, for code that runs ``asyncio.run`` itself."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ThreadedFake:
        self.thread.start()
        self.runner, self.url = asyncio.run_coroutine_threadsafe(start(self.server), self.loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def start(server: FakeServer) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(server.app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"
