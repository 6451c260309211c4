"""Simulated goodput of niyama, EDF and FCFS when the device is not what the predictor believes.

The simulator's device takes each step's time from a truth model
(`engine/truth.py`): the latency model times a bias, times mean-1 lognormal
noise with occasional stragglers. Each scheduler's predictor starts from the
nominal model and corrects itself online, as on a real device. Goodput (the
highest rate with at most 1% misses) of each policy is searched for every
truth setting and seed on the bundled azure-code trace with Poisson
arrivals and the paper's tiers; the report gives the median and spread over
seeds of each goodput and of the ratios niyama/fcfs and niyama/edf (a ratio
is taken per seed, on the same requests and the same truth draws).
Simulations are deterministic, so the figures do not depend on the machine
or the number of processes.

Run: niyama bench qos-truth --output docs/results/qos_truth.md --json docs/results/qos_truth.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import time
from dataclasses import replace

from niyama.engine.capacity import goodput_search
from niyama.engine.simulator import SimSetup
from niyama.qos.config import builtin_tier_config
from niyama.qos.options import TruthConfig
from niyama.qos.policy import policy_config
from niyama.qos.traces import load_trace

from .report import median_range, print_and_save
from .servers import sigterm_exits

TRACE = "azure-code"
TIERS = "paper"
MIX = (1 / 3, 1 / 3, 1 / 3)
POLICIES = ("fcfs", "edf", "niyama")
START = {"fcfs": 2.5, "edf": 8.0, "niyama": 12.0}  # near each exact-truth goodput: fewer probes
TRUTHS = ((0.0, 1.0), (0.1, 1.0), (0.3, 1.0), (0.0, 1.25))  # (noise, bias)


def goodput_task(policy: str, noise: float, bias: float, seed: int, duration: float) -> tuple[float, int]:
    """One policy's goodput on one truth and seed: (req/s, probes made)."""
    setup = SimSetup(builtin_tier_config(TIERS), policy_config(policy), truth=TruthConfig(noise=noise, bias=bias))
    rate, probes = goodput_search(
        replace(setup, seed=seed), load_trace(TRACE), MIX, duration, seed, True, START[policy]
    )
    return rate, len(probes)


def measure(seeds: list[int], duration: float, jobs: int) -> dict[tuple[float, float], dict[str, list[float]]]:
    """Goodputs per truth and policy, one per seed (in seed order); ``jobs`` searches at a time."""
    context = multiprocessing.get_context("spawn")  # a Pool ends its workers however the block is left
    with context.Pool(jobs, initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
        tasks = {
            (truth, policy, seed): pool.apply_async(goodput_task, (policy, *truth, seed, duration))
            for truth in TRUTHS
            for policy in POLICIES
            for seed in seeds
        }
        return {
            truth: {policy: [tasks[(truth, policy, seed)].get()[0] for seed in seeds] for policy in POLICIES}
            for truth in TRUTHS
        }


def ratios(goodputs: dict[str, list[float]], base: str) -> list[float]:
    return [n / b if b else float("inf") for n, b in zip(goodputs["niyama"], goodputs[base])]


def report(results: dict, seeds: list[int], duration: float, command: str) -> list[str]:
    lines = [
        "# Simulated goodput under prediction error",
        "",
        f"Command: `{command}`",
        "",
        f"Setup: trace `{TRACE}`, Poisson arrivals, tiers `{TIERS}` (a third of the requests each), latency model",
        "`a100-llama3-8b`, KV cache 400,000 tokens, one replica. The device's step time is the latency model",
        "times the bias times lognormal noise of mean 1 (sigma = noise; with noise, one step in 500 takes 4x);",
        "every scheduler's predictor starts from the nominal model and corrects itself online.",
        f"Goodput: the highest rate with at most 1% misses (primary objective), to 2%, {duration:.0f} s of arrivals",
        f"per probe. Median (min–max) over seeds {', '.join(map(str, seeds))}; a ratio is taken per seed.",
        "",
        "| noise | bias | fcfs (req/s) | edf (req/s) | niyama (req/s) | niyama / fcfs | niyama / edf |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (noise, bias), goodputs in results.items():
        cells = [median_range(goodputs[p]) for p in POLICIES]
        cells += [
            median_range(ratios(goodputs, "fcfs")).replace(" (", "x ("),
            median_range(ratios(goodputs, "edf")).replace(" (", "x ("),
        ]
        lines.append(f"| {noise:g} | {bias:g} | " + " | ".join(cells) + " |")
    low_fcfs = min(min(ratios(goodputs, "fcfs")) for goodputs in results.values())
    low_edf = min(min(ratios(goodputs, "edf")) for goodputs in results.values())
    lines += [
        "",
        f"Lowest ratio of any seed and setting: niyama/fcfs {low_fcfs:.2f}x, niyama/edf {low_edf:.2f}x",
        "(the targets under error: 1.5x and 1.2x).",
        "",
        "What this does not show. The noise is independent from step to step with mean 1, and the bias is one",
        "constant factor: the predictor's online correction (one factor per segment) learns a constant bias within",
        "tens of steps, so after that a 1.25 bias is lost capacity more than misprediction. Errors that depend on",
        "the step's shape (a model right for decodes but wrong for long prefills), drift over time, memory effects",
        "and the HTTP path are not modelled here; the emulated server's end-to-end evaluation covers the last.",
    ]
    return lines


def as_json(results: dict, seeds: list[int], duration: float, command: str) -> dict:
    return {
        "command": command, "trace": TRACE, "tiers": TIERS, "arrivals": "poisson", "duration_s": duration,
        "seeds": seeds, "miss_budget": 0.01,
        "truths": [
            {"noise": noise, "bias": bias, "goodput_rps": goodputs,
             "niyama_over_fcfs": ratios(goodputs, "fcfs"), "niyama_over_edf": ratios(goodputs, "edf")}
            for (noise, bias), goodputs in results.items()
        ],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="niyama bench qos-truth", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of arrivals per probe (default 600)")
    parser.add_argument("--output", help="also write the Markdown report to this file")
    parser.add_argument("--json", help="also write the figures as JSON to this file")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="searches run side by side")
    args = parser.parse_args(argv)
    seeds = list(range(args.seeds))
    command = "niyama bench qos-truth --output docs/results/qos_truth.md --json docs/results/qos_truth.json"
    if (args.seeds, args.duration) != (3, 600.0):
        command += f" --seeds {args.seeds} --duration {args.duration:g}"
    started = time.perf_counter()
    with sigterm_exits():
        results = measure(seeds, args.duration, args.jobs)
    print_and_save(report(results, seeds, args.duration, command), started, args.jobs, args.output)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(as_json(results, seeds, args.duration, command), out, indent=1)
            out.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
