"""The bench client against a fake server: SSE parsing, both APIs, errors, and exact token timing."""

from __future__ import annotations

import asyncio

import pytest
from bench_fake import FakeClock, FakeServer, start

from niyama.bench import client as client_module
from niyama.bench.accounting import outcome
from niyama.bench.apis import APIS
from niyama.bench.client import Record, Target, new_session, stream
from niyama.bench.sse import SseParser, aevents, events, json_events
from niyama.bench.workload import BenchRequest
from niyama.qos.tiers import SloTargets


def test_sse_parser_follows_the_event_stream_rules():
    parser = SseParser()
    lines = [b":\n", b"data: {\"a\":1}\n", b"\n", b"event: x\r\n", b"data:{\"b\":2}\r\n", b"data: more\n", b"\r\n",
             b"\n", b"data: [DONE]\n", b"\n"]  # fmt: skip
    events = [e for e in map(parser.feed, lines) if e is not None]
    assert events == ['{"a":1}', '{"b":2}\nmore', "[DONE]"]
    assert parser.feed(b"data: tail") is None and parser.close() == "tail"


def test_events_of_a_whole_stream_sync_and_async_the_same():
    lines = [b": keep-alive", b'data: {"a":1}', b"", b"", b'data: {"b":', b"data: 2}", b"", b"data: [DONE]", b""]
    assert list(events(lines)) == ['{"a":1}', '{"b":\n2}', "[DONE]"]
    assert json_events(lines) == [{"a": 1}, {"b": 2}]
    assert list(events([b"data: unfinished"])) == ["unfinished"]  # a stream cut before its blank line
    assert json_events(line.decode() for line in lines) == [{"a": 1}, {"b": 2}]  # httpx's lines are str

    async def lines_async():
        for line in lines:
            yield line

    async def collect() -> list[str]:
        return [data async for data in aevents(lines_async())]

    assert asyncio.run(collect()) == list(events(lines))


def _run(server: FakeServer, api: str, request: BenchRequest, clock: FakeClock | None = None) -> Record:
    async def go() -> Record:
        runner, url = await start(server)
        try:
            async with new_session(30) as session:
                record = Record(request, url, 3)
                return await stream(session, Target(url, APIS[api]), "one two three", record)
        finally:
            await runner.cleanup()

    return asyncio.run(go())


@pytest.mark.parametrize("api", ["tgi", "openai"])
def test_token_times_are_taken_on_arrival_and_judged_exactly(api, monkeypatch):
    clock = FakeClock(100.0)
    monkeypatch.setattr(client_module, "clock", clock)
    server = FakeServer(token_times=(0.5, 0.7, 1.1), clock=clock)
    record = _run(server, api, BenchRequest(0, "interactive", 0.0, 3, 3), clock)
    assert record.error is None and record.ok
    assert record.sent == 100.0
    assert record.token_times == [100.5, 100.7, 101.1]
    assert record.reported_tokens == 3 and record.finish_reason == "length"
    result = outcome(record, SloTargets(ttft=1.0, tbt=0.3))
    assert result.ttft == pytest.approx(0.5) and result.ttlt == pytest.approx(1.1)
    assert result.tbts == pytest.approx((0.2, 0.4))
    # Token 3 is due at anchor 101.0 + 2 x 0.3 = 101.6: the 0.4 s gap is covered by the early first token.
    assert result.violations == () and not result.missed
    late = outcome(record, SloTargets(ttft=0.4, tbt=0.3))
    assert late.violations == ("ttft",) and late.missed
    path, headers, body = server.bodies[0]
    assert headers["x-qos-tier"] == "interactive"
    if api == "tgi":
        assert path == "/generate_stream" and body["parameters"]["ignore_eos"] is True
        assert body["parameters"]["max_new_tokens"] == 3
    else:
        assert path == "/v1/completions" and body["ignore_eos"] is True and body["stream"] is True
        assert body["max_tokens"] == 3


def test_http_errors_keep_the_server_message():
    record = _run(FakeServer(), "tgi", BenchRequest(0, "premium", 0.0, 3, 3))
    assert not record.ok and record.error.startswith("HTTP 422: Input validation error: unknown QoS tier 'premium'")


def test_error_events_fail_the_request():
    record = _run(FakeServer(capacity=0), "tgi", BenchRequest(0, "batch", 0.0, 3, 3))
    assert not record.ok and record.error == "generation: overloaded"


def test_a_refused_connection_is_an_error_not_a_crash():
    async def go() -> Record:
        async with new_session(5) as session:
            record = Record(BenchRequest(0, "batch", 0.0, 1, 1), "http://127.0.0.1:9", 1)
            return await stream(session, Target("http://127.0.0.1:9", APIS["tgi"]), "hi", record)

    record = asyncio.run(go())
    assert not record.ok and record.error.startswith("ClientConnectorError")


def test_openai_finish_only_chunks_are_not_tokens():
    api = APIS["openai"]
    assert api.interpret({"choices": [{"text": "", "finish_reason": "length"}]}).tokens == 0
    assert api.interpret({"choices": [{"text": "", "finish_reason": None}]}).tokens == 1
    assert api.interpret({"choices": [], "usage": {"completion_tokens": 7}}).reported_tokens == 7
    assert APIS["tgi"].interpret({"error": "boom", "error_type": "generation"}).error == "generation: boom"
