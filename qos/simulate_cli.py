"""`niyama simulate`: replay a trace through a scheduler on a virtual clock.

Modes: one run (a per-tier table, or ``--json``), ``--goodput`` (the highest
rate with at most 1% misses), ``--silo`` (replicas a per-tier siloed
deployment needs against one shared pool). Bad input of any kind is one line
on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from tqdm import tqdm

from .capacity import Probe, goodput_search, silo_vs_shared
from .config import BUILTIN_CONFIGS, resolve_tier_config
from .policy import POLICIES
from .predictor import REFERENCE_MODELS, LatencyPredictor
from .report import format_table, summarize
from .simulator import SimSetup, simulate
from .traces import BUILTIN_TRACES, load_trace
from .workload import RatePhase, build_workload, parse_mix, parse_rate_schedule

PROG = "niyama simulate"
MECHANISMS = {
    "dynamic-chunking": "dynamic_chunking",
    "hybrid-priority": "hybrid_priority",
    "relegation": "relegation",
    "selective-preemption": "selective_preemption",
    "importance-preemption": "importance_preemption",
}


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2 (argparse prints usage too)
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Replay a workload through a QoS scheduler on a virtual clock.")
    parser.add_argument("--trace", default="azure-code", help=f"{'|'.join(BUILTIN_TRACES)}|PATH.csv (default azure-code)")
    parser.add_argument("--rate", type=float, help="requests/s (default: the trace's own rate)")
    parser.add_argument("--rate-schedule", help="alternating rates, e.g. 2:900,5:900 (RATE:SECONDS,...)")
    parser.add_argument("--arrivals", choices=("trace", "poisson"), help="timestamps of a timed trace (default) or Poisson")
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds of arrivals (default 3600)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiers", default="paper", help=f"{'|'.join(BUILTIN_CONFIGS)}|PATH.toml (default paper)")
    parser.add_argument("--mix", help="share of requests per tier in file order, e.g. 0.34,0.33,0.33 (default equal)")
    parser.add_argument("--policy", default="niyama", help=f"{'|'.join(POLICIES)} (default niyama)")
    parser.add_argument("--without", default="", help=f"niyama mechanisms to switch off: {','.join(MECHANISMS)}")
    parser.add_argument("--token-budget", type=int, default=256, help="tokens per step with fixed chunking (default 256)")
    parser.add_argument("--latency-model", default="a100-llama3-8b", help=f"{'|'.join(REFERENCE_MODELS)}|PROFILE.json")
    parser.add_argument("--kv-tokens", type=int, default=400_000, help="KV cache capacity in tokens (default 400000)")
    parser.add_argument("--block-size", type=int, default=16, help="KV block size in tokens (default 16)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--goodput", action="store_true", help="search the highest rate with at most 1%% misses")
    mode.add_argument("--silo", action="store_true", help="replicas needed: one group per tier vs one shared pool")
    return parser


def main(argv: list[str]) -> int:
    try:
        args = build_parser().parse_args(argv)
        return run(args)
    except (UsageError, ValueError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    if args.policy not in POLICIES:
        raise UsageError(f"unknown policy {args.policy!r}; choose from {', '.join(POLICIES)}")
    for name, value in (("--duration", args.duration), ("--token-budget", args.token_budget), ("--kv-tokens", args.kv_tokens), ("--block-size", args.block_size)):
        if not value > 0:
            raise UsageError(f"{name} must be positive, got {value}")
    if args.rate is not None and not args.rate > 0:
        raise UsageError(f"--rate must be positive, got {args.rate}")
    if args.rate is not None and args.rate_schedule:
        raise UsageError("give --rate or --rate-schedule, not both")
    if args.rate_schedule and (args.goodput or args.silo):
        raise UsageError("--rate-schedule applies to a single run, not to --goodput or --silo")
    tiers = resolve_tier_config(args.tiers)
    trace = load_trace(args.trace)
    mix = parse_mix(args.mix, tiers) if args.mix else tuple(1 / len(tiers.tiers) for _ in tiers.tiers)
    options: dict[str, object] = {"token_budget": args.token_budget}
    for mechanism in filter(None, (m.strip() for m in args.without.split(","))):
        if mechanism not in MECHANISMS:
            raise UsageError(f"--without: unknown mechanism {mechanism!r}; choose from {', '.join(MECHANISMS)}")
        options[MECHANISMS[mechanism]] = False
    LatencyPredictor.load(args.latency_model)  # fail fast on a bad profile, before any simulation
    setup = SimSetup(tiers, args.policy, args.latency_model, args.kv_tokens, args.block_size, options)
    poisson = args.arrivals == "poisson" or trace.times is None
    rate = args.rate or (None if poisson else trace.native_rate)
    if args.goodput:
        return run_goodput(args, setup, trace, mix, poisson, rate or 1.0)
    if rate is None and not args.rate_schedule:
        raise UsageError(f"--rate is required: trace {args.trace!r} has no timestamps")
    phases = parse_rate_schedule(args.rate_schedule) if args.rate_schedule else (RatePhase(rate, args.duration),)
    requests = build_workload(trace, tiers, mix, phases, args.duration, args.seed, poisson)
    config = describe(args, tiers, mix, poisson, rate)
    if args.silo:
        return run_silo(args, setup, requests, config)
    with tqdm(total=len(requests), unit="req", desc=args.policy, disable=True if args.json else None, file=sys.stderr, leave=False) as bar:
        result = simulate(setup, requests, progress=bar.update)
    summary = {"config": config, **summarize(result)}
    print(json.dumps(summary) if args.json else format_table(summary))
    return 0


def describe(args: argparse.Namespace, tiers, mix, poisson: bool, rate: float | None) -> dict:
    return {
        "trace": args.trace, "arrivals": "poisson" if poisson else "trace", "rate": rate,
        "rate_schedule": args.rate_schedule, "duration": args.duration, "seed": args.seed,
        "tiers": tiers.source, "mix": [round(m, 6) for m in mix], "policy": args.policy,
        "without": args.without or None, "token_budget": args.token_budget,
        "latency_model": args.latency_model, "kv_tokens": args.kv_tokens, "block_size": args.block_size,
    }  # fmt: skip


def run_goodput(args, setup: SimSetup, trace, mix, poisson: bool, start: float) -> int:
    def report(result: Probe) -> None:
        if not args.json:
            verdict = "ok" if result.ok else "too many misses"
            print(f"  rate {result.rate:8.3f} req/s: {result.misses:6d} misses of {result.requests:6d} ({verdict})", file=sys.stderr)

    rate, probes = goodput_search(setup, trace, mix, args.duration, args.seed, poisson, start, report)
    if args.json:
        config = describe(args, setup.tiers, mix, poisson, None)
        probes_out = [{"rate": round(p.rate, 6), "requests": p.requests, "misses": p.misses} for p in probes]
        print(json.dumps({"config": config, "goodput_rps": round(rate, 4), "probes": probes_out}))
    else:
        print(f"goodput_rps {rate:.3f} ({args.policy}, {args.trace}, {len(probes)} probes)")
    return 0


def run_silo(args, setup: SimSetup, requests, config: dict) -> int:
    result = silo_vs_shared(setup, requests)
    if args.json:
        print(json.dumps({
            "config": config, "shared_replicas": result.shared, "silo_replicas": result.silo,
            "silo_total": result.silo_total, "saving_pct": round(result.saving_pct, 2),
        }))  # fmt: skip
    else:
        per_tier = ", ".join(f"{name} {count}" for name, count in result.silo.items())
        print(f"siloed: {result.silo_total} replicas ({per_tier}; budgets 256 interactive, 2048 batch, edf)")
        print(f"shared ({args.policy}): {result.shared} replicas")
        print(f"the shared deployment needs {result.silo_total - result.shared} fewer replicas ({result.saving_pct:.1f}%)")
    return 0
