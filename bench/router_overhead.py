"""`niyama bench router-overhead`: what the HTTP layer costs per streamed token.

The real server (app, engine loop, scheduler, detokenizer, stop matcher, SSE)
with a null worker that returns a token instantly, so everything measured is
router and engine overhead. The server runs in its own process (uvicorn with
uvloop and httptools, as `niyama serve` runs); the load generator runs in this
one with a lean HTTP/1.1 client, so each side has a core.

Reported: streamed tokens/s and requests/s with N concurrent streams (each
stream asks for `--tokens` tokens and starts again when it ends), and the
mean gap between tokens of one lone stream, which is the latency the router
adds to every token when the model itself takes no time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import orjson

from .servers import free_port, launch, sigterm_exits, stop, wait_healthy

# The server process: this module's ``serve`` on the port given.
SERVE = "import sys; from niyama.bench.router_overhead import serve; serve(int(sys.argv[1]))"
# Ordinary English tokens of the SmolLM2 vocabulary: detokenization does real work.
TOKENS = (314, 2943, 260, 3458, 282, 1345, 30, 378, 4471, 314, 1173, 8001, 288, 2106)


def serve(port: int) -> None:
    import uvicorn
    from transformers import AutoTokenizer

    from niyama.engine.replicas import ReplicaParts, ReplicaSet
    from niyama.engine.virtual import VirtualWorker
    from niyama.qos.config import builtin_tier_config
    from niyama.qos.kv_blocks import BlockAllocator
    from niyama.qos.predictor import LatencyPredictor
    from niyama.qos.routing import make_routing
    from niyama.qos.scheduler import make_scheduler
    from niyama.router.app import create_app
    from niyama.router.settings import ServerSettings
    from niyama.router.tokenizer import TextTokenizer
    from niyama.worker.loading import resolve_checkpoint

    tiers = builtin_tier_config("default")
    scheduler = make_scheduler(
        "niyama", tiers, BlockAllocator(1 << 16, 16), LatencyPredictor.reference("a100-llama3-8b"), max_running=1024
    )
    null_worker = VirtualWorker(lambda *shape: 0.0, TOKENS)  # one token per sampling chunk, at once
    engine = ReplicaSet([ReplicaParts(scheduler, null_worker, frozenset())], None, make_routing("slack"))
    tokenizer = TextTokenizer(AutoTokenizer.from_pretrained(resolve_checkpoint(None)[1]))
    settings = ServerSettings("null-worker", 4096, 8192, max_concurrent_requests=4096)
    app = create_app(engine, tokenizer, tiers, settings)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", loop="uvloop", http="httptools")


class Stream:
    """One keep-alive connection issuing /generate_stream requests back to back."""

    def __init__(self, port: int, tokens: int) -> None:
        body = orjson.dumps({"inputs": "Hello there", "parameters": {"max_new_tokens": tokens, "ignore_eos": True}})
        self.request = (
            b"POST /generate_stream HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.port = port

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def one(self, gaps: list[float] | None = None) -> int:
        """One request; returns the events received (token times into ``gaps`` when given)."""
        self.writer.write(self.request)
        events = 0
        buffered = b""
        last = time.perf_counter()
        while True:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            now = time.perf_counter()
            count = data.count(b"data: ")
            if gaps is not None and count:
                gaps.extend([(now - last) / count] * count)
                last = now
            events += count
            buffered = (buffered + data)[-8:]
            if buffered.endswith(b"\r\n0\r\n\r\n"):
                return events


async def throughput(port: int, streams: int, tokens: int, seconds: float) -> tuple[float, float]:
    clients = [Stream(port, tokens) for _ in range(streams)]
    await asyncio.gather(*(client.open() for client in clients))
    counts = {"tokens": 0, "requests": 0}
    measuring = asyncio.Event()
    deadline = 0.0

    async def loop(client: Stream) -> None:
        while True:
            events = await client.one()
            if measuring.is_set() and time.perf_counter() < deadline:
                counts["tokens"] += events
                counts["requests"] += 1
            if time.perf_counter() >= deadline and measuring.is_set():
                return

    tasks = [asyncio.ensure_future(loop(client)) for client in clients]
    await asyncio.sleep(2.0)  # warm-up: every stream running
    start = time.perf_counter()
    deadline = start + seconds
    measuring.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    return counts["tokens"] / elapsed, counts["requests"] / elapsed


async def lone_stream_gap(port: int, tokens: int, requests: int) -> float:
    client = Stream(port, tokens)
    await client.open()
    gaps: list[float] = []
    for _ in range(requests):
        await client.one(gaps)
    return statistics.mean(gaps[len(gaps) // 10 :]) * 1e6


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="niyama bench router-overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=256, help="tokens per request")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time with all streams running")
    args = parser.parse_args(argv)
    port = free_port()
    with sigterm_exits():
        server = launch([sys.executable, "-c", SERVE, str(port)])
        try:
            wait_healthy(server, f"http://127.0.0.1:{port}", 120, "router-overhead")
            gap = asyncio.run(lone_stream_gap(port, args.tokens, 20))
            tokens_per_s, requests_per_s = asyncio.run(throughput(port, args.streams, args.tokens, args.seconds))
        finally:
            stop(server, grace=10)
    print(f"router overhead, null worker, {args.tokens} tokens per request:")
    print(
        f"  {args.streams} concurrent streams: {tokens_per_s:,.0f} streamed tokens/s, {requests_per_s:,.1f} requests/s"
    )
    print(f"  router + engine CPU per streamed token under load: {1e6 / tokens_per_s:.1f} us")
    print(f"  one lone stream: {gap:.1f} us between tokens (the latency the router adds to each token)")
    return 0
