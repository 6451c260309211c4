"""`niyama simulate`: replay a trace through a scheduler on a virtual clock.

Modes: one run (a per-tier table, or ``--json``), ``--goodput`` (the highest
rate with at most 1% misses), ``--silo`` (replicas a per-tier siloed
deployment needs against one shared pool). The simulated server is a run
configuration (``qos/options.py``): the same flags and run files as `niyama
serve`. Bad input of any kind is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from tqdm import tqdm

from niyama.qos.arrivals import PROCESSES
from niyama.qos.options import RunConfig, add_run_options, run_config
from niyama.qos.predictor import LatencyPredictor
from niyama.qos.sessions import Conversations
from niyama.qos.traces import BUILTIN_TRACES, load_trace
from niyama.qos.workload import RatePhase, build_workload, parse_mix, parse_rate_schedule

from .capacity import Probe, goodput_search, silo_vs_shared
from .report import format_table, summarize
from .simulator import SimSetup, simulate

PROG = "niyama simulate"


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2 (argparse prints usage too)
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Replay a workload through a QoS scheduler on a virtual clock.")
    parser.add_argument(
        "--trace", default="azure-code", help=f"{'|'.join(BUILTIN_TRACES)}|PATH.csv (default azure-code)"
    )
    parser.add_argument("--rate", type=float, help="requests/s (default: the trace's own rate)")
    parser.add_argument("--rate-schedule", help="alternating rates, e.g. 2:900,5:900 (RATE:SECONDS,...)")
    parser.add_argument(
        "--arrivals", choices=PROCESSES, help="timestamps of a timed trace (default), Poisson, or gamma (--burstiness)"
    )
    parser.add_argument(
        "--burstiness", type=float, default=1.0, help="gamma shape: 1 Poisson (default), <1 burstier; implies gamma"
    )
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds of arrivals (default 3600)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mix", help="share of requests per tier in file order, e.g. 0.34,0.33,0.33 (default equal)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    talk = parser.add_argument_group("multi-turn conversations (shared prefixes: qos/sessions.py)")
    talk.add_argument("--conversation-turns", type=int, help="the requests are turns of chats of up to N turns")
    talk.add_argument("--think-seconds", type=float, default=30.0, help="least gap between a chat's turns (30)")
    talk.add_argument("--system-tokens", type=int, default=0, help="a system prompt of N tokens opens each chat (0)")
    talk.add_argument("--system-prompts", type=int, default=1, help="distinct system prompts chats draw from (1)")
    talk.add_argument("--max-context", type=int, default=8192, help="a chat ends before its prompt passes N (8192)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--goodput", action="store_true", help="search the highest rate with at most 1%% misses")
    mode.add_argument("--silo", action="store_true", help="replicas needed: one group per tier vs one shared pool")
    add_run_options(parser, command="simulate")
    return parser


def main(argv: list[str]) -> int:
    try:
        args = build_parser().parse_args(argv)
        return run(args)
    except (UsageError, ValueError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    config = run_config(args, command="simulate")
    if not args.duration > 0:
        raise UsageError(f"--duration must be positive, got {args.duration}")
    if args.rate is not None and not args.rate > 0:
        raise UsageError(f"--rate must be positive, got {args.rate}")
    if args.rate is not None and args.rate_schedule:
        raise UsageError("give --rate or --rate-schedule, not both")
    if args.silo and config.replicas != 1:
        raise UsageError("--silo finds the number of replicas itself: leave out --replicas")
    if args.rate_schedule and (args.goodput or args.silo):
        raise UsageError("--rate-schedule applies to a single run, not to --goodput or --silo")
    tiers = config.tier_config()
    trace = load_trace(args.trace)
    mix = parse_mix(args.mix, tiers) if args.mix else tuple(1 / len(tiers.tiers) for _ in tiers.tiers)
    LatencyPredictor.load(config.latency_model)  # fail fast on a bad profile, before any simulation
    setup = SimSetup.from_config(config, tiers, args.seed)
    burstiness = args.burstiness
    if args.arrivals == "trace" and burstiness != 1.0:
        raise UsageError("--burstiness shapes gamma arrivals, not a trace's own")
    if not burstiness > 0:
        raise UsageError(f"--burstiness must be positive, got {burstiness}")
    poisson = args.arrivals in ("poisson", "gamma") or burstiness != 1.0 or trace.times is None
    rate = args.rate or (None if poisson else trace.native_rate)
    sessions = None
    if args.conversation_turns is not None:
        sessions = Conversations(args.conversation_turns, args.think_seconds, args.system_tokens,
                                 args.system_prompts, args.max_context)  # fmt: skip
    if args.goodput:
        return run_goodput(args, config, setup, trace, mix, poisson, rate or 1.0, sessions)
    if rate is None and not args.rate_schedule:
        raise UsageError(f"--rate is required: trace {args.trace!r} has no timestamps")
    phases = parse_rate_schedule(args.rate_schedule) if args.rate_schedule else (RatePhase(rate, args.duration),)
    requests = build_workload(trace, tiers, mix, phases, args.duration, args.seed, poisson, burstiness, sessions)
    described = describe(args, config, mix, poisson, rate)
    if args.silo:
        return run_silo(args, config, setup, requests, described)
    name = config.policy.name
    with tqdm(
        total=len(requests), unit="req", desc=name, disable=True if args.json else None, file=sys.stderr, leave=False
    ) as bar:
        result = simulate(setup, requests, progress=bar.update)
    summary = {"config": described, **summarize(result), "routed": list(result.routed)}
    print(json.dumps(summary) if args.json else format_table(summary))
    if not args.json and config.replicas > 1:
        print(f"requests per replica ({config.routing}): {', '.join(map(str, result.routed))}")
    return 0


def describe(args: argparse.Namespace, config: RunConfig, mix, poisson: bool, rate: float | None) -> dict:
    """The workload's settings and the whole run configuration (every policy knob), for --json."""
    return {
        "trace": args.trace, "arrivals": ("gamma" if args.burstiness != 1.0 else "poisson") if poisson else "trace",
        "burstiness": args.burstiness, "rate": rate,
        "rate_schedule": args.rate_schedule, "duration": args.duration, "seed": args.seed,
        "mix": [round(m, 6) for m in mix], **config.as_dict(),
        "conversations": None if args.conversation_turns is None else {
            "turns": args.conversation_turns, "think_seconds": args.think_seconds,
            "system_tokens": args.system_tokens, "system_prompts": args.system_prompts,
            "max_context": args.max_context,
        },
    }  # fmt: skip


def run_goodput(args, config: RunConfig, setup: SimSetup, trace, mix, poisson: bool, start: float, sessions) -> int:
    def report(result: Probe) -> None:
        if not args.json:
            verdict = "ok" if result.ok else "too many misses"
            print(
                f"  rate {result.rate:8.3f} req/s: {result.misses:6d} misses of {result.requests:6d} ({verdict})",
                file=sys.stderr,
            )

    rate, probes = goodput_search(
        setup, trace, mix, args.duration, args.seed, poisson, start, report, args.burstiness, sessions
    )
    if args.json:
        described = describe(args, config, mix, poisson, None)
        probes_out = [{"rate": round(p.rate, 6), "requests": p.requests, "misses": p.misses} for p in probes]
        print(json.dumps({"config": described, "goodput_rps": round(rate, 4), "probes": probes_out}))
    else:
        print(f"goodput_rps {rate:.3f} ({config.policy.name}, {args.trace}, {len(probes)} probes)")
    return 0


def run_silo(args, config: RunConfig, setup: SimSetup, requests, described: dict) -> int:
    result = silo_vs_shared(setup, requests)
    if args.json:
        print(json.dumps({
            "config": described, "shared_replicas": result.shared, "silo_replicas": result.silo,
            "silo_total": result.silo_total, "saving_pct": round(result.saving_pct, 2),
        }))  # fmt: skip
    else:
        per_tier = ", ".join(f"{name} {count}" for name, count in result.silo.items())
        print(f"siloed: {result.silo_total} replicas ({per_tier}; budgets 256 interactive, 2048 batch, edf)")
        print(f"shared ({config.policy.name}): {result.shared} replicas (routing: {config.routing})")
        print(
            f"the shared deployment needs {result.silo_total - result.shared} fewer replicas ({result.saving_pct:.1f}%)"
        )
    return 0
