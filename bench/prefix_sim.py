"""Simulated gain of prefix caching on multi-turn chats, and what tier-aware retention changes.

The workload is `niyama simulate --conversation-turns 6` on the ShareGPT
lengths: Poisson arrivals turned into chats of up to six turns (30 s think
time, a 500-token system prompt, one of four; a chat ends before its prompt
passes 4,096 tokens), a third of the chats in each
paper tier, on the reference A100 latency model. Two questions:

1. Goodput (the highest rate with at most 1% misses) with the cache on and
   off, on a 400,000-token cache, and at fixed rates around it: each tier's
   misses, time to first token and prompt cache hit rate.
2. At a fixed rate and a smaller cache, where cached blocks must be evicted:
   tier-aware retention (`--prefix-retention-seconds 60`, the default)
   against plain LRU (0), and a stronger setting (600): each tier's prompt
   cache hit rate, misses and time to first token.

Each figure is the median (min–max) over seeds; the simulation is
deterministic, so the figures do not depend on the machine.

Run: niyama bench prefix-sim --output docs/results/prefix_cache_sim.md --json docs/results/prefix_cache_sim.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import signal
import time

from niyama.engine.capacity import goodput_search
from niyama.engine.report import summarize
from niyama.engine.simulator import SimSetup, simulate
from niyama.qos.arrivals import RatePhase
from niyama.qos.config import builtin_tier_config
from niyama.qos.policy import policy_config
from niyama.qos.sessions import Conversations
from niyama.qos.traces import load_trace
from niyama.qos.workload import build_workload

from .report import median_range, print_and_save

TRACE = "sharegpt"
TIERS = "paper"
MIX = (1 / 3, 1 / 3, 1 / 3)
CHATS = Conversations(turns=6, think_seconds=30.0, system_tokens=500, system_prompts=4, max_context=4096)
RATES = (3.0, 4.0, 5.0)  # fixed rates around the goodput, req/s
RETENTIONS = (0.0, 60.0, 600.0)  # seconds per unit of importance; 0 is plain LRU
PRESSURE = {"rate": 2.0, "kv_tokens": 300_000}  # a cache small enough that retention decides what stays


def goodput_task(caching: bool, seed: int, duration: float) -> float:
    setup = SimSetup(builtin_tier_config(TIERS), policy_config("niyama", prefix_caching=caching), seed=seed)
    rate, _ = goodput_search(setup, load_trace(TRACE), MIX, duration, seed, True, 3.0, sessions=CHATS)
    return rate


def run_task(rate: float, kv_tokens: int, caching: bool, retention: float, seed: int, duration: float) -> dict:
    """One simulated run: per tier its prompt cache hit %, misses, TTFT p50 and request count."""
    tiers = builtin_tier_config(TIERS)
    policy = policy_config("niyama", prefix_caching=caching, prefix_retention_seconds=retention)
    setup = SimSetup(tiers, policy, kv_tokens=kv_tokens, seed=seed)
    phases = (RatePhase(rate, duration),)
    requests = build_workload(load_trace(TRACE), tiers, MIX, phases, duration, seed, True, sessions=CHATS)
    summary = summarize(simulate(setup, requests))
    keys = ("prompt_cache_hit_pct", "misses", "ttft_p50", "count")
    return {name: {key: tier[key] for key in keys} for name, tier in summary["tiers"].items()}


def measure(seeds: list[int], duration: float, jobs: int) -> dict:
    context = multiprocessing.get_context("spawn")
    with context.Pool(jobs, initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
        goodputs = {
            (caching, seed): pool.apply_async(goodput_task, (caching, seed, duration))
            for caching in (True, False)
            for seed in seeds
        }
        fixed = {
            (rate, caching, seed): pool.apply_async(run_task, (rate, 400_000, caching, 60.0, seed, duration))
            for rate in RATES
            for caching in (True, False)
            for seed in seeds
        }
        retained = {
            (retention, seed): pool.apply_async(
                run_task, (PRESSURE["rate"], PRESSURE["kv_tokens"], True, retention, seed, duration)
            )
            for retention in RETENTIONS
            for seed in seeds
        }
        return {
            "goodput": {caching: [goodputs[(caching, s)].get() for s in seeds] for caching in (True, False)},
            "rates": {
                (rate, caching): [fixed[(rate, caching, s)].get() for s in seeds]
                for rate in RATES
                for caching in (True, False)
            },
            "retention": {r: [retained[(r, s)].get() for s in seeds] for r in RETENTIONS},
        }


def tier_rows(first: str, runs: list[dict]) -> list[str]:
    """One table row per tier: ``first``'s cells, then hit %, misses and TTFT p50 over the runs (seeds)."""
    rows = []
    for tier in runs[0]:
        cells = [
            median_range([run[tier]["prompt_cache_hit_pct"] for run in runs], 1),
            median_range([run[tier]["misses"] for run in runs], 0),
            median_range([run[tier]["ttft_p50"] for run in runs], 2),
        ]
        rows.append(f"| {first} | {tier} | " + " | ".join(cells) + " |")
    return rows


def report(results: dict, seeds: list[int], duration: float, command: str) -> list[str]:
    on, off = results["goodput"][True], results["goodput"][False]
    lines = [
        "# Prefix caching in simulation: multi-turn chats on the reference A100",
        "",
        f"Command: `{command}`",
        "",
        f"Workload: trace `{TRACE}` lengths, Poisson arrivals turned into chats (`qos/sessions.py`) of up to",
        f"{CHATS.turns} turns, {CHATS.think_seconds:.0f} s think time, a {CHATS.system_tokens}-token system prompt"
        f" (one of {CHATS.system_prompts}); each turn's prompt is the previous prompt, its answer and a new message",
        f"(the trace's prompt length); a chat ends before its prompt passes {CHATS.max_context} tokens.",
        f"Tiers `{TIERS}` (Q1 interactive, importance 3; Q2 and Q3 batch, 2 and 1), a third of the chats each;",
        f"latency model `a100-llama3-8b`, policy `niyama`, {duration:.0f} s of arrivals per run.",
        f"Median (min–max) over seeds {', '.join(map(str, seeds))}.",
        "",
        "## Goodput, cache on and off (400,000-token cache)",
        "",
        "| prefix caching | goodput (req/s) |",
        "|---|---:|",
        f"| on | {median_range(on)} |",
        f"| off | {median_range(off)} |",
        f"| on / off | {median_range([a / b for a, b in zip(on, off)])}x |",
        "",
        "At fixed rates (400,000-token cache):",
        "",
        "| rate (req/s) | prefix caching | tier | prompt cache hit % | misses | TTFT p50 (s) |",
        "|---:|---|---|---:|---:|---:|",
    ]
    for (rate, caching), runs in results["rates"].items():
        lines += tier_rows(f"{rate:g} | {'on' if caching else 'off'}", runs)
    lines += [
        "",
        f"## Retention under pressure ({PRESSURE['rate']:g} req/s, {PRESSURE['kv_tokens']:,}-token cache)",
        "",
        "`--prefix-retention-seconds` R: a released block is evicted in the order of its release time plus R per",
        "unit of the highest importance among the tiers that used it; R = 0 is plain LRU.",
        "",
        "| retention R (s) | tier | prompt cache hit % | misses | TTFT p50 (s) |",
        "|---:|---|---:|---:|---:|",
    ]
    for retention, runs in results["retention"].items():
        lines += tier_rows(f"{retention:g}", runs)
    lines += [
        "",
        "What this does not show. The simulator knows each step's time exactly (the latency model is the device);",
        "turns are sent at their drawn times even when the previous answer is not finished (an open loop), so",
        "under overload later turns find less history cached than waiting users would; token ids are synthetic.",
        "Chats are capped at 4,096 tokens: with 8,192 a burst of long first turns (no history to reuse) makes",
        "relegation give up on a few Q1 requests even at 1.8 req/s, with the cache on or off, which hides the cache's",
        "effect in a goodput figure (a scheduler matter, noted for the team). Q1 misses here come from such bursts",
        "of new chats; the cache shortens later turns, not first ones.",
        "The CPU measurement with a real model is `niyama bench prefix` ([prefix_cache.md](prefix_cache.md)).",
    ]
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="niyama bench prefix-sim", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of arrivals per run (default 600)")
    parser.add_argument("--jobs", type=int, default=2, help="simulations at a time (default 2)")
    parser.add_argument("--output", help="also write the markdown report here")
    parser.add_argument("--json", help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    command = "niyama bench prefix-sim " + " ".join(argv)
    began = time.perf_counter()
    results = measure(seeds, args.duration, args.jobs)
    print_and_save(report(results, seeds, args.duration, command), began, args.jobs, args.output)
    if args.json:
        figures = {
            "command": command, "seeds": seeds, "duration": args.duration, "seconds": time.perf_counter() - began,
            "goodput": {"on": results["goodput"][True], "off": results["goodput"][False]},
            "rates": {f"{rate:g} {'on' if on else 'off'}": runs for (rate, on), runs in results["rates"].items()},
            "retention": {str(r): runs for r, runs in results["retention"].items()},
        }  # fmt: skip
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(figures, out, indent=1)
    return 0
