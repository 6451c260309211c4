"""Soak: mixed traffic with injected faults for a given time; nothing the server accepted may be lost.

    python -m niyama.bench.soak --duration 150 --rate 2        # starts `niyama serve` itself
    python -m niyama.bench.soak --url http://127.0.0.1:8080   # or soaks a running server

By default it starts `niyama serve` with faults on: a share of engine steps
fails (`--inject-step-failures`), the KV cache is small enough that requests
are preempted and recomputed, and streams of clients that stop reading are
cut after a few seconds. It then sends open-loop (Poisson) traffic on two
tiers: plain and streamed TGI requests, OpenAI chat streams, clients that
hang up mid-stream, and malformed bodies. Every request ends in exactly one
outcome, decided by this client:

- completed: the whole answer (a stream's final event);
- cancelled: this client hung up on purpose;
- failed: a clear answer, by reason (`429 overloaded` with Retry-After,
  `422 validation`, `424 generation`, an in-stream `generation` error...);
- lost: anything else (no answer in time, a broken connection, a stream
  that ends with neither a final nor an error event, an error outside the
  JSON envelope, a 429 without Retry-After). Must be 0.

Once the server is idle it reads /metrics for leaked KV blocks (total -
free; must be 0) and per-tier SLO attainment, and /proc for the server
process's peak resident memory (VmHWM; Linux, and only for a server it
started or a `--pid`). Needs aiohttp (in the `test` extra). Exit status 1
when anything was lost or leaked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .prometheus import scrape
from .servers import healthy, sigterm_exits, start_server, stop
from .sse import DONE, aevents

SCENARIOS = {"generate": 3, "stream": 3, "chat": 2, "cancel": 1, "malformed": 1}
PROMPTS = ("Hello", "Tell me a story about a robot.", "What is the capital of France?", "Write a haiku.",
           "Explain paged attention in one sentence.", "List three colours.")  # fmt: skip
SERVE_DEFAULTS = ["--latency-profile", "a100-llama3-8b", "--max-batch-total-tokens", "1024", "--inject-step-failures",
                  "0.02", "--inject-seed", "1", "--stream-send-timeout", "5", "--log-level", "warning"]  # fmt: skip
COMPLETED, CANCELLED = "completed", "cancelled"


@dataclass
class Traffic:
    """What to send: ``rate`` requests per second for ``duration`` seconds, scenarios by weight."""

    rate: float
    duration: float
    tiers: tuple[str, ...] = ("interactive", "batch")
    mix: dict[str, int] = field(default_factory=lambda: dict(SCENARIOS))
    max_new_tokens: int = 16
    prompts: tuple[str, ...] = PROMPTS
    timeout: float = 300.0  # a request with no answer by then is lost
    seed: int = 0


@dataclass
class Tally:
    outcomes: Counter = field(default_factory=Counter)  # "completed", "cancelled", "failed: ...", "lost: ..."
    by_tier: dict[str, Counter] = field(default_factory=dict)

    def add(self, tier: str, outcome: str) -> None:
        self.outcomes[outcome] += 1
        self.by_tier.setdefault(tier, Counter())[outcome] += 1

    @property
    def sent(self) -> int:
        return sum(self.outcomes.values())

    def count(self, prefix: str) -> int:
        return sum(n for outcome, n in self.outcomes.items() if outcome.startswith(prefix))

    def reasons(self, prefix: str) -> dict[str, int]:
        return {o.removeprefix(prefix): n for o, n in sorted(self.outcomes.items()) if o.startswith(prefix)}


async def refusal(response) -> str:
    """The outcome of a non-200 answer: a clear failure, or lost when it is not in the envelope."""
    try:
        body = json.loads(await response.read())
    except ValueError:
        body = None
    if response.headers.get("content-type") != "application/json" or set(body or ()) != {"error", "error_type"}:
        return f"lost: {response.status} without the JSON envelope"
    if response.status == 429 and "Retry-After" not in response.headers:
        return "lost: 429 without Retry-After"
    return f"failed: {response.status} {body['error_type']}"


def is_final(event: dict) -> bool:
    if "choices" in event:  # OpenAI chat chunk
        return any(choice.get("finish_reason") for choice in event["choices"])
    return event.get("generated_text") is not None


async def read_stream(response, stop_after: int | None) -> str:
    events, final = 0, False
    async for data in aevents(response.content):
        if data == DONE:
            continue
        event = json.loads(data)
        if "error" in event:
            return f"failed: in-stream {event.get('error_type')}"
        final = final or is_final(event)
        events += 1
        if stop_after is not None and events >= stop_after and not final:
            response.close()
            return CANCELLED
    return COMPLETED if final else "lost: stream ended without a final or error event"


async def one_request(session, url: str, scenario: str, tier: str, rng: random.Random, traffic: Traffic) -> str:
    import aiohttp

    headers = {"x-qos-tier": tier}
    prompt = rng.choice(traffic.prompts)
    new_tokens = rng.randint(max(1, traffic.max_new_tokens // 4), traffic.max_new_tokens)
    tgi = {"inputs": prompt, "parameters": {"max_new_tokens": new_tokens}}
    route, body, stream = {
        "generate": ("/generate", tgi, False),
        "stream": ("/generate_stream", tgi, True),
        "cancel": ("/generate_stream", tgi, True),
        "chat": (
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": new_tokens,
                "stream": True,
                "model": "soak",
            },
            True,
        ),  # fmt: skip
        "malformed": ("/generate", None, False),
    }[scenario]
    data = json.dumps(body).encode() if body is not None else b'{"inputs": "' + bytes([0xFF, 0xFE])
    try:
        async with session.post(url + route, data=data, headers=headers) as response:
            if response.status != 200:
                return await refusal(response)
            if stream:
                return await read_stream(response, rng.randint(1, 3) if scenario == "cancel" else None)
            answer = json.loads(await response.read())
            return COMPLETED if "generated_text" in answer else "lost: 200 without generated_text"
    except TimeoutError:
        return "lost: no answer within the timeout"
    except aiohttp.ClientError as error:
        return f"lost: {type(error).__name__}"


async def run_traffic(url: str, traffic: Traffic) -> Tally:
    """Open-loop traffic: arrivals follow a Poisson process whatever the server's answers."""
    import aiohttp

    rng = random.Random(traffic.seed)
    scenarios, weights = zip(*traffic.mix.items())
    loop = asyncio.get_running_loop()
    timeout = aiohttp.ClientTimeout(total=traffic.timeout)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        tasks: list[tuple[str, asyncio.Task]] = []
        started = next_at = loop.time()
        while next_at < started + traffic.duration:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            scenario, tier = rng.choices(scenarios, weights)[0], rng.choice(traffic.tiers)
            request = one_request(session, url, scenario, tier, random.Random(rng.random()), traffic)
            tasks.append((tier, asyncio.ensure_future(request)))
            next_at += rng.expovariate(traffic.rate)
        tally = Tally()
        for tier, task in tasks:
            tally.add(tier, await task)
    return tally


def attainment(before: dict[str, float], after: dict[str, float], tiers: tuple[str, ...]) -> dict[str, float | None]:
    """Per tier, the share of requests finished between two scrapes that met their primary objective (None: none)."""
    shares = {}
    for tier in tiers:
        evaluated, met = (f'niyama_slo_{kind}_total{{tier="{tier}"}}' for kind in ("evaluated", "met"))
        done = after.get(evaluated, 0.0) - before.get(evaluated, 0.0)
        shares[tier] = (after.get(met, 0.0) - before.get(met, 0.0)) / done if done else None
    return shares


def leaked_blocks(url: str, wait: float = 60.0) -> int:
    """KV blocks still held once nothing is queued or running (waits for the server to go idle)."""
    deadline = time.monotonic() + wait
    while True:
        metrics = scrape(url)
        idle = metrics.get("tgi_queue_size", 0) == 0 and metrics.get("tgi_batch_current_size", 0) == 0
        if idle or time.monotonic() > deadline:
            return int(metrics["niyama_kv_blocks_total"] - metrics["niyama_kv_blocks_free"])
        time.sleep(0.2)


def resident_kib(pid: int, field_name: str = "VmHWM") -> int | None:
    """The process's peak (VmHWM) or current (VmRSS) resident memory in KiB; None where /proc has no answer."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def report(tally: Tally, leaked: int, peak_kib: int | None, shares: dict[str, float | None]) -> str:
    peak = f"{peak_kib / 1024:.0f} MiB" if peak_kib is not None else "n/a"
    lines = [
        f"requests sent:  {tally.sent}",
        f"completed:      {tally.count(COMPLETED)}",
        f"cancelled:      {tally.count(CANCELLED)} (by this client, on purpose)",
        f"failed:         {tally.count('failed: ')}",
        *(f"  {reason}: {n}" for reason, n in tally.reasons("failed: ").items()),
        f"lost:           {tally.count('lost: ')} (must be 0)",
        *(f"  {reason}: {n}" for reason, n in tally.reasons("lost: ").items()),
        f"peak RSS:       {peak} (server process)",
        f"leaked blocks:  {leaked} (must be 0)",
        "SLO attainment: " + ", ".join(f"{t} {s:.1%}" if s is not None else f"{t} n/a" for t, s in shares.items()),
    ]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="niyama bench soak", description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=120.0, help="seconds of traffic")
    p.add_argument("--rate", type=float, default=2.0, help="requests per second (Poisson arrivals)")
    p.add_argument("--max-new-tokens", type=int, default=16, help="largest max_new_tokens of a request")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--url", default=None, help="soak this running server instead of starting one")
    p.add_argument("--pid", type=int, default=None, help="with --url: the server's process id, for its peak RSS")
    p.add_argument("--port", type=int, default=18087, help="port of the server this command starts")
    p.add_argument("--server-log", type=Path, default=Path(tempfile.gettempdir()) / "niyama-soak-server.log",
                   help="where the started server's output goes (each injected fault logs an error)")  # fmt: skip
    p.add_argument("serve_args", nargs=argparse.REMAINDER,
                   help="after `--`: `niyama serve` flags (default: " + " ".join(SERVE_DEFAULTS) + ")")  # fmt: skip
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    serve_args = [a for a in args.serve_args if a != "--"] or SERVE_DEFAULTS
    traffic = Traffic(args.rate, args.duration, max_new_tokens=args.max_new_tokens, seed=args.seed)
    with sigterm_exits():
        process, url = (None, args.url) if args.url else start_server(serve_args, args.port, args.server_log, 600)
        pid = process.pid if process is not None else args.pid
        try:
            before = scrape(url)
            tally = asyncio.run(run_traffic(url, traffic))
            leaked = leaked_blocks(url)
            shares = attainment(before, scrape(url), traffic.tiers)
            alive = healthy(url)
            peak = resident_kib(pid) if pid is not None else None
        finally:
            if process is not None:
                stop(process, grace=60)
    print(report(tally, leaked, peak, shares))
    print(f"server alive after the soak: {alive}" + ("" if args.url else f"; its log: {args.server_log}"))
    return 0 if alive and not leaked and not tally.count("lost: ") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
