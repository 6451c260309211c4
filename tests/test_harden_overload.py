"""Overload: a burst at several times the measured capacity, against a real `niyama serve` process.

The server runs the tiny real-vocabulary Llama from disk, so its resident
memory is its own (read from /proc) and the client does not share its GIL.
The traffic comes from `bench/soak.py`, which classifies every request's end.
"""

import asyncio
import time

import aiohttp
import pytest
from router_server import real_tokenizer, tiny_model

from niyama.bench import soak
from niyama.bench.prometheus import scrape
from niyama.bench.servers import start_server, stop
from niyama.bench.soak import Traffic, attainment, leaked_blocks, resident_kib, run_traffic

TIERS_TOML = """
default = "interactive"
[[tiers]]
name = "interactive"
kind = "interactive"
ttft = "1s"
tbt = "100ms"
importance = 2
[[tiers]]
name = "batch"
kind = "batch"
ttlt = "3s"
importance = 1
"""
LIMIT = 48  # --max-concurrent-requests
# Long prompts and a prefill budget of 256 tokens a step: prefill is the bottleneck, so a queue forms
# inside the server and the scheduler has to choose whose first token comes first.
PROMPTS = tuple(f"Request {i}: " + "tell me a long story about the sea " * 18 for i in range(8))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-model")
    tiny_model().save_pretrained(folder)
    real_tokenizer().hf.save_pretrained(folder)
    (folder / "tiers.toml").write_text(TIERS_TOML)
    process, url = start_server(
        ["--model-id", str(folder), "--qos-config", str(folder / "tiers.toml"), "--latency-profile", "a100-llama3-8b",
         "--max-concurrent-requests", str(LIMIT), "--max-total-tokens", "256", "--max-batch-prefill-tokens", "256",
         "--max-batch-total-tokens", "16384", "--log-level", "warning"],
        log=folder / "server.log", timeout=300,
    )  # fmt: skip
    yield process, url
    stop(process, grace=60)
    assert process.returncode == 0  # a drained, graceful exit


async def measure_capacity(url: str) -> float:
    """Requests per second the server completes with every concurrency permit busy (best of two rounds)."""
    body = {"inputs": PROMPTS[0], "parameters": {"max_new_tokens": 16}}
    best = 0.0
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            started = time.monotonic()
            answers = await asyncio.gather(*(session.post(url + "/generate", json=body) for _ in range(LIMIT)))
            assert all(answer.status == 200 for answer in answers)
            best = max(best, LIMIT / (time.monotonic() - started))
    return best


async def probe_health(url: str, until: float) -> list[tuple[int, float]]:
    """/health every 250 ms until ``until`` (event-loop time): (status, seconds to answer) each."""
    loop, probes = asyncio.get_running_loop(), []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        while loop.time() < until:
            started = loop.time()
            async with session.get(url + "/health") as answer:
                probes.append((answer.status, loop.time() - started))
            await asyncio.sleep(0.25)
    return probes


async def burst(url: str, traffic: Traffic):
    until = asyncio.get_running_loop().time() + traffic.duration
    return await asyncio.gather(run_traffic(url, traffic), probe_health(url, until))


def test_a_burst_at_four_times_capacity_loses_nothing_and_keeps_the_important_tier_best(served):
    process, url = served
    start_rss = resident_kib(process.pid, "VmRSS")
    capacity = asyncio.run(measure_capacity(url))
    before = scrape(url)
    traffic = Traffic(4 * capacity, 8.0, mix={"generate": 1, "stream": 1}, max_new_tokens=16, prompts=PROMPTS, seed=1)
    tally, probes = asyncio.run(burst(url, traffic))
    leaked = leaked_blocks(url)
    shares = attainment(before, scrape(url), traffic.tiers)
    peak_rss = resident_kib(process.pid)
    print(
        f"\noverload: capacity {capacity:.1f} req/s, burst {traffic.rate:.1f} req/s for {traffic.duration:.0f} s; "
        f"{dict(tally.outcomes)}; attainment {shares}; peak RSS {peak_rss / 1024:.0f} MiB "
        f"(from {start_rss / 1024:.0f} MiB); /health {len(probes)} probes, slowest {max(p[1] for p in probes):.3f} s"
    )
    assert tally.count("lost: ") == 0, tally.reasons("lost: ")
    assert set(tally.reasons("failed: ")) == {"429 overloaded"}  # beyond the limit, each with Retry-After
    assert all(counts["completed"] > 0 for counts in tally.by_tier.values())
    assert all(status == 200 for status, _ in probes)
    assert leaked == 0
    assert peak_rss - start_rss < 512 * 1024  # KiB: bounded, whatever the offered load
    assert shares["interactive"] is not None and shares["batch"] is not None
    assert shares["interactive"] >= shares["batch"]


def test_the_soak_command_reports_every_figure_and_passes_on_a_healthy_server(served, capsys):
    process, url = served
    assert soak.main(["--url", url, "--pid", str(process.pid), "--duration", "3", "--rate", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    figures = dict(line.split(":", 1) for line in lines if not line.startswith("  "))
    assert {"requests sent", "completed", "cancelled", "failed", "lost", "peak RSS", "leaked blocks"} <= set(figures)
    assert figures["lost"].split()[0] == "0" and figures["leaked blocks"].split()[0] == "0"
    assert int(figures["requests sent"]) == sum(int(figures[k].split()[0]) for k in ("completed", "cancelled",
                                                                                     "failed", "lost"))  # fmt: skip
    assert figures["peak RSS"].strip().endswith("MiB (server process)")
