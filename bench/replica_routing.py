"""Slack-aware routing vs round-robin across Niyama replicas, at the same load.

Every figure comes from `niyama.qos` cluster simulations (N schedulers on one
virtual clock, each request routed as it arrives by the same code the
server's front router runs) of the bundled azure-code trace with the paper's
three-tier mix on the reference A100 model. Two questions: how many
requests miss at a fixed replica count and load, and how many replicas each
policy needs to keep misses within 1% at a fixed load (the cluster-level
twin of goodput, and cheaper to search). Simulations are deterministic,
so the results do not depend on the machine or the number of processes; the
committed output lives in docs/results/replica_routing.md and .json.

Run: niyama bench replica-routing [--output docs/results/replica_routing.md] [--json ...]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import time
from dataclasses import asdict, dataclass, field

from niyama.engine.capacity import replicas_needed
from niyama.engine.report import summarize
from niyama.engine.simulator import SimSetup, simulate
from niyama.qos.config import builtin_tier_config
from niyama.qos.traces import load_trace
from niyama.qos.workload import RatePhase, build_workload

from .report import print_and_save
from .servers import sigterm_exits

TRACE = "azure-code"
TIERS = "paper"
MIX = (1 / 3, 1 / 3, 1 / 3)
SEED = 0
ROUTINGS = ("round-robin", "slack")
POISSON = {"trace": False, "Poisson": True}  # arrival process name -> Poisson arrivals (else the trace's own)
COMMAND = (
    "niyama bench replica-routing --output docs/results/replica_routing.md --json docs/results/replica_routing.json"
)


@dataclass(frozen=True)
class Plan:
    """What is simulated; the defaults are the committed results."""

    replicas: int = 4
    duration: float = 3600.0  # seconds of arrivals (then drained)
    # Total loads (req/s) for `replicas` replicas: bursty trace arrivals within capacity, Poisson ones beyond it.
    loads: dict[str, tuple[float, ...]] = field(
        default_factory=lambda: {"trace": (8.0, 12.0, 16.0), "Poisson": (24.0, 28.0, 32.0)}
    )
    sizing_loads: dict[str, float] = field(default_factory=lambda: {"trace": 12.0, "Poisson": 40.0})


@dataclass
class Results:
    runs: dict[tuple[str, float, str], dict]  # (arrivals, load, routing) -> summary, plus "routed"
    sizing: dict[tuple[str, str], int]  # (arrivals, routing) -> replicas needed at the sizing load


def _setup(routing: str, replicas: int) -> SimSetup:
    return SimSetup(builtin_tier_config(TIERS), replicas=replicas, routing=routing)


def _requests(rate: float, poisson: bool, duration: float):
    tiers = builtin_tier_config(TIERS)
    return build_workload(load_trace(TRACE), tiers, MIX, (RatePhase(rate, duration),), duration, SEED, poisson)


def violations_task(routing: str, replicas: int, rate: float, poisson: bool, duration: float) -> dict:
    result = simulate(_setup(routing, replicas), _requests(rate, poisson, duration))
    summary = summarize(result)
    summary["routed"] = list(result.routed)
    return summary


def sizing_task(routing: str, rate: float, poisson: bool, duration: float) -> int:
    return replicas_needed(_setup(routing, 1), _requests(rate, poisson, duration))


def measure(plan: Plan, jobs: int) -> Results:
    """Every simulation of ``plan``, ``jobs`` at a time in separate processes.

    A ``multiprocessing.Pool`` ends its workers when the block is left in any
    way (an error, Ctrl-C, SIGTERM under ``sigterm_exits``), where
    ``ProcessPoolExecutor`` would wait for their simulations; the workers
    ignore SIGINT (Ctrl-C reaches the whole process group) and are ended by
    this process.
    """
    context = multiprocessing.get_context("spawn")  # no forked copies of a parent's threads (torch, Ray)
    with context.Pool(jobs, initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
        sizing = {
            (mode, r): pool.apply_async(sizing_task, (r, plan.sizing_loads[mode], POISSON[mode], plan.duration))
            for mode in plan.sizing_loads
            for r in ROUTINGS
        }
        runs = {
            (mode, rate, r): pool.apply_async(violations_task, (r, plan.replicas, rate, POISSON[mode], plan.duration))
            for mode, rates in plan.loads.items()
            for rate in rates
            for r in ROUTINGS
        }
        return Results(
            {k: f.get() for k, f in runs.items()},
            {k: f.get() for k, f in sizing.items()},
        )


def _pct(value: float) -> str:
    return f"{value:.2f}%"


def report(plan: Plan, results: Results) -> list[str]:
    """The Markdown tables of docs/results/replica_routing.md."""
    tiers = builtin_tier_config(TIERS).names
    lines = [
        "# Routing across replicas: slack-aware vs round-robin",
        "",
        f"Command: `{COMMAND}`",
        "",
        f"Setup: trace `{TRACE}` (Azure LLM inference 2023, code), tiers `{TIERS}` (Q1 interactive TTFT 6 s /",
        "TBT 50 ms, Q2 TTLT 600 s, Q3 TTLT 1800 s, a third of the requests each), latency model `a100-llama3-8b`",
        f"(Llama-3-8B on one A100), Niyama policy on every replica, KV cache 400,000 tokens per replica, seed {SEED},",
        f"{plan.duration:.0f} s of arrivals. Replicas share one virtual clock; each request is routed when it arrives.",
        "*Trace* arrivals replay the trace's own timestamps rescaled to the load; *Poisson* arrivals draw lengths",
        "from the trace. *Round-robin* sends request n to replica n mod N (the paper's cluster set-up); *slack* sends",
        "it where its predicted first-token slack is largest (`qos/routing.py`, the server's default). A request",
        "misses when it violates its tier's primary target (TTFT for Q1, TTLT for Q2/Q3).",
        "",
        f"## Misses with {plan.replicas} replicas at the same load",
        "",
        "| arrivals | load (req/s) | routing | misses | "
        + " | ".join(f"{t} misses" for t in tiers)
        + " | Q1 TTFT p99 (s) | requests per replica |",
        "|---|---:|---|---:|" + "---:|" * len(tiers) + "---:|---|",
    ]  # fmt: skip
    for (mode, rate, routing), summary in results.runs.items():
        per_tier = " | ".join(_pct(summary["tiers"][t]["violation_pct"]) for t in tiers)
        shares = ", ".join(map(str, summary["routed"]))
        q1_p99 = summary["tiers"][tiers[0]]["ttft_p99"]
        misses = _pct(summary["violation_pct"])
        lines.append(f"| {mode} | {rate:g} | {routing} | {misses} | {per_tier} | {q1_p99:.2f} | {shares} |")
    lines += [
        "",
        "## Replicas needed for at most 1% misses",
        "",
        "| arrivals | load (req/s) | round-robin | slack |",
        "|---|---:|---:|---:|",
    ]
    for mode, rate in plan.sizing_loads.items():
        counts = " | ".join(str(results.sizing[(mode, r)]) for r in ROUTINGS)
        lines.append(f"| {mode} | {rate:g} | {counts} |")
    return lines


def as_json(plan: Plan, results: Results) -> dict:
    """The same figures as plain JSON, one record per simulation or search."""
    tiers = builtin_tier_config(TIERS).names
    return {
        "command": COMMAND,
        "plan": asdict(plan),
        "runs": [
            {
                "arrivals": mode,
                "load": rate,
                "routing": routing,
                "violation_pct": summary["violation_pct"],
                "tier_violation_pct": {t: summary["tiers"][t]["violation_pct"] for t in tiers},
                "q1_ttft_p99": summary["tiers"][tiers[0]]["ttft_p99"],
                "routed": summary["routed"],
            }
            for (mode, rate, routing), summary in results.runs.items()
        ],
        "replicas_needed": [
            {"arrivals": mode, "load": plan.sizing_loads[mode], "routing": routing, "replicas": count}
            for (mode, routing), count in results.sizing.items()
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="niyama bench replica-routing", description=__doc__.splitlines()[0])
    parser.add_argument("--output", help="also write the Markdown report to this file")
    parser.add_argument("--json", help="also write the figures as JSON to this file")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="simulations run side by side")
    args = parser.parse_args(argv)
    plan = Plan()
    started = time.perf_counter()
    with sigterm_exits():  # SIGTERM unwinds like Ctrl-C: the pool's workers are ended
        results = measure(plan, args.jobs)
    lines = report(plan, results)
    print_and_save(lines, started, args.jobs, args.output)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(as_json(plan, results), out, indent=1)
            out.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
