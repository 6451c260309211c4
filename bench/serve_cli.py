"""`niyama bench serve`: tier-aware open-loop load against a TGI- or OpenAI-compatible server.

Sends a trace's requests (lengths scaled to fit) at a rate, a rate schedule
or the trace's own timestamps, each in a QoS tier (header `x-qos-tier`),
measures TTFT, every token gap and TTLT from the client, and judges each
request against its tier's targets exactly as the simulator and the server
do. `--goodput` searches the highest rate with at most 1% of requests
missing. Writes results.json, summary.md and PNG plots to `--out`.
See docs/bench.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
from pathlib import Path

from niyama.qos.arrivals import PROCESSES
from niyama.qos.config import BUILTIN_CONFIGS, resolve_tier_config
from niyama.qos.errors import QosConfigError, TraceError
from niyama.qos.traces import BUILTIN_TRACES, load_trace
from niyama.qos.workload import RatePhase, parse_mix, parse_rate_schedule

from .apis import APIS
from .client import Target, new_session
from .endpoint import BenchError, check_reachable, max_total_tokens, openai_model, preflight, server_tokenize
from .goodput import GoodputSearch
from .plots import plot_attainment, plot_latency_cdfs
from .probe import Scenario, run_probe
from .prompt_text import PromptBuilder, local_tokenize
from .report import markdown, tier_table
from .workload import LengthScaling, parse_scaling

PROG = "niyama bench serve"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise BenchError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--url", help="base URL of the server, e.g. http://127.0.0.1:8080")
    p.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="TIER=URL",
        help="send TIER's requests to URL instead (a siloed deployment); repeatable",
    )
    p.add_argument("--api", default="tgi", choices=sorted(APIS), help="tgi: /generate_stream; openai: /v1/completions")
    p.add_argument("--model", help="OpenAI `model` field (default: the first of /v1/models)")
    p.add_argument("--api-key", help="sent as `Authorization: Bearer KEY`")
    p.add_argument("--tiers", default="default", help=f"{'|'.join(BUILTIN_CONFIGS)}|PATH.toml: tiers and targets")
    p.add_argument("--mix", help="share of requests per tier, in tier-file order (default: equal)")
    p.add_argument("--trace", default="azure-conv", help=f"{'|'.join(BUILTIN_TRACES)}|PATH.csv")
    p.add_argument("--arrivals", choices=PROCESSES, help="default poisson (gamma when --burstiness is given)")
    p.add_argument("--burstiness", type=float, default=None, help="gamma shape: 1 Poisson, <1 burstier")
    p.add_argument("--rate", type=float, help="requests/s (the start rate of --goodput)")
    p.add_argument("--rate-schedule", help="RATE:SECONDS,... repeating, e.g. 0.5:60,2:30")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of arrivals per run (default 60)")
    p.add_argument("--max-requests", type=int, default=1000, help="at most this many requests per run (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale-lengths", default="1", help="F or PROMPT_F,OUTPUT_F: multiply the trace's lengths")
    p.add_argument("--max-prompt-tokens", type=int, help="cap on scaled prompt lengths")
    p.add_argument("--max-output-tokens", type=int, help="cap on scaled output lengths")
    p.add_argument("--tokenizer", help="local tokenizer (path or cached hub id) instead of the server's /tokenize")
    p.add_argument("--no-ignore-eos", action="store_true", help="do not ask for ignore_eos (outputs may end early)")
    p.add_argument("--goodput", action="store_true", help="search the highest rate with <= 1%% misses")
    p.add_argument("--goodput-precision", type=float, default=0.1, help="stop when high/low <= 1 + this")
    p.add_argument("--max-probes", type=int, default=8, help="at most this many runs in a goodput search")
    p.add_argument("--drain-timeout", type=float, default=120.0, help="seconds in flight after the last send")
    p.add_argument("--request-timeout", type=float, default=600.0, help="seconds one request may take")
    p.add_argument("--out", required=True, type=Path, help="folder for results.json, summary.md and plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p  # fmt: skip


def main(argv: list[str]) -> int:
    try:
        args = build_parser().parse_args(argv)
        return asyncio.run(run(args, argv))
    except (BenchError, QosConfigError, TraceError, ValueError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def routes(args: argparse.Namespace, tier_names: tuple[str, ...]) -> dict[str, str]:
    """Tier -> base URL: ``--url`` for every tier, ``--route`` overrides."""
    chosen = {name: args.url.rstrip("/") for name in tier_names} if args.url else {}
    for entry in args.route:
        tier, sep, url = entry.partition("=")
        if not sep or not url:
            raise BenchError(f"--route takes TIER=URL, got {entry!r}")
        if tier not in tier_names:
            raise BenchError(f"--route: unknown tier {tier!r}; the tier file has {', '.join(tier_names)}")
        chosen[tier] = url.rstrip("/")
    for name, url in chosen.items():
        if not url.startswith(("http://", "https://")):
            raise BenchError(f"tier {name!r}: URL must start with http:// or https://, got {url!r}")
    missing = [name for name in tier_names if name not in chosen]
    if missing:
        raise BenchError(f"no URL for tier(s) {', '.join(missing)}: give --url or --route TIER=URL")
    return chosen


def check_numbers(args: argparse.Namespace) -> None:
    if args.rate is not None and not args.rate > 0:
        raise BenchError(f"--rate must be positive, got {args.rate}")
    if args.rate is None and not args.rate_schedule and args.arrivals != "trace":
        raise BenchError("give --rate or --rate-schedule (or --arrivals trace with a timed trace)")
    if args.rate is not None and args.rate_schedule:
        raise BenchError("give --rate or --rate-schedule, not both")
    if args.goodput and args.rate_schedule:
        raise BenchError("--goodput searches a single rate; it does not take --rate-schedule")
    for name in ("duration", "drain_timeout", "request_timeout", "goodput_precision"):
        if not getattr(args, name) > 0:
            raise BenchError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.max_requests < 1 or args.max_probes < 1:
        raise BenchError("--max-requests and --max-probes must be at least 1")


async def run(args: argparse.Namespace, argv: list[str]) -> int:
    check_numbers(args)
    tiers = resolve_tier_config(args.tiers)
    trace = load_trace(args.trace)
    mix = parse_mix(args.mix, tiers) if args.mix else tuple(1 / len(tiers.tiers) for _ in tiers.tiers)
    urls = routes(args, tiers.names)
    arrivals = args.arrivals or ("gamma" if args.burstiness not in (None, 1.0) else "poisson")
    if arrivals == "trace" and trace.times is None:
        raise BenchError(f"--arrivals trace: trace {args.trace!r} has no timestamps")
    rate = args.rate or (trace.native_rate if arrivals == "trace" else None)
    phases = parse_rate_schedule(args.rate_schedule) if args.rate_schedule else (RatePhase(rate, args.duration),)
    prompt_factor, output_factor = parse_scaling(args.scale_lengths)
    api = APIS[args.api]
    async with new_session(30.0) as session:
        for url in dict.fromkeys(urls.values()):
            await check_reachable(session, url)
        limits = [await max_total_tokens(session, url) for url in dict.fromkeys(urls.values())]
        known = [limit for limit in limits if limit is not None]
        scaling = LengthScaling(prompt_factor, output_factor, args.max_prompt_tokens, args.max_output_tokens,
                                min(known) if known else None)  # fmt: skip
        model = args.model
        if args.api == "openai" and model is None:
            model = await openai_model(session, next(iter(urls.values())))
        targets = {tier: Target(url, api, model, args.api_key, not args.no_ignore_eos) for tier, url in urls.items()}
        for tier, target in targets.items():
            await preflight(session, target, tier)
        if args.tokenizer:
            from transformers import AutoTokenizer

            tokenize = local_tokenize(AutoTokenizer.from_pretrained(args.tokenizer))
        else:
            tokenize = server_tokenize(session, next(iter(urls.values())), args.api_key)
        scenario = Scenario(
            trace, tiers, mix, arrivals, args.burstiness or 1.0, args.duration, args.seed, scaling, targets,
            PromptBuilder(tokenize, args.seed), args.max_requests, args.drain_timeout, args.request_timeout,
            not args.no_progress,
        )  # fmt: skip
        config = {
            "command": "niyama bench serve " + shlex.join(argv), "urls": urls, "api": args.api, "model": model,
            "tiers": tiers.source, "mix": [round(m, 4) for m in mix], "trace": args.trace, "arrivals": arrivals,
            "burstiness": args.burstiness or 1.0, "duration_s": args.duration, "seed": args.seed,
            "scale_lengths": [prompt_factor, output_factor], "max_prompt_tokens": args.max_prompt_tokens,
            "max_output_tokens": args.max_output_tokens, "max_total_tokens": scaling.max_total,
            "ignore_eos": not args.no_ignore_eos, "tokenizer": args.tokenizer or "server /tokenize",
        }  # fmt: skip
        if args.goodput:
            results = await search(scenario, rate, args)
        else:
            label = f"rate {rate:g} req/s" if rate else f"schedule {args.rate_schedule}"
            probe = await run_probe(scenario, phases, label)
            results = {"runs": [probe.to_json()]}
    results = {"config": config, **results}
    write_outputs(results, tiers, args.out)
    if args.goodput:
        print(f"goodput {results['goodput']['rps']:.3f} req/s ({len(results['runs'])} probes)")
    else:
        print("\n".join(tier_table(results["runs"][0]["summary"])))
    print(f"results: {args.out}/results.json, summary.md, latency_cdf.png, attainment.png")
    return 0


async def search(scenario: Scenario, start: float, args: argparse.Namespace) -> dict:
    finder = GoodputSearch(start, args.goodput_precision, args.max_probes)
    runs = []
    while (rate := finder.next_rate()) is not None:
        probe = await run_probe(scenario, (RatePhase(rate, scenario.duration),), f"rate {rate:.3f} req/s", True)
        finder.record(probe.as_probe())
        runs.append(probe.to_json())
        verdict = "ok" if probe.ok else "too many misses"
        print(f"  rate {rate:.3f} req/s: {probe.misses} misses of {probe.requests} ({verdict})", file=sys.stderr)
    return {"goodput": {"rps": finder.goodput, "bracketed": finder.bracketed, "probes": len(runs)}, "runs": runs}


def write_outputs(results: dict, tiers, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "summary.md").write_text(markdown(results))
    runs = results["runs"]
    best = [r for r in runs if r["ok"]] or runs
    shown = runs if "goodput" not in results else [max(best, key=lambda r: r["rate"] or 0.0)]
    plot_latency_cdfs(shown, tiers, out / "latency_cdf.png", "latency CDFs against the tier targets")
    plot_attainment({"server": runs}, out / "attainment.png", "attainment against rate")
