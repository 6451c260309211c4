"""The end-to-end QoS evaluation on this machine: Niyama vs FCFS and EDF, and shared vs siloed.

Starts the servers itself (`niyama serve`, default model, CPU), every one with
the same step cap (``--step-cap``: Niyama's dynamic steps stay within it,
FCFS and EDF run fixed steps of it), so that the comparison differs only in
the policy. Then, side by side so that a noisy machine weighs on every
system alike, ``--repeats`` times (repeat r replays seed ``--seed + r``):

1. goodput of one shared server per policy (niyama, fcfs, edf) and of a
   siloed deployment (one server per tier, each pinned to its share of the
   cores), by goodput searches interleaved probe by probe (the order rotates
   every round);
2. a batch flood: a steady interactive stream while a burst of batch requests
   arrives, on each shared server in turn: the interactive tier's p99 TTFT
   and TBT under each policy.

One run on this machine swings several-fold with the machine's load, so the
report gives each figure as the median of the repeats with their range.

Writes results.json, summary.md and plots to ``--out``; docs/results/
qos_evaluation.md explains the choices. Stopped early (Ctrl-C, SIGTERM), it
stops the servers it started. Run from a checkout:
``.venv/bin/python -m niyama.bench.evaluate_qos --latency-profile PROFILE.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Protocol

from niyama.qos.arrivals import ArrivalProcess
from niyama.qos.config import load_tier_config
from niyama.qos.traces import load_trace
from niyama.qos.workload import RatePhase

from .apis import APIS
from .client import Target, new_session
from .endpoint import max_total_tokens, server_tokenize
from .evaluate_report import write_report
from .goodput import GoodputSearch
from .probe import ProbeResult, Scenario, measure, run_probe
from .prompt_text import PromptBuilder
from .servers import ServerGroup, ServerSpec, scrape, sigterm_exits
from .workload import LengthScaling, build_requests, merge, parse_scaling

TIERS_TOML = """# Tier targets scaled to a 2-core CPU serving SmolLM2-135M (see docs/results/qos_evaluation.md).
default = "interactive"

[[tiers]]
name = "interactive"
kind = "interactive"
ttft = "{ttft}s"
tbt = "{tbt}s"
importance = 2

[[tiers]]
name = "batch"
kind = "batch"
ttlt = "{ttlt}s"
importance = 1
"""
SHARED = ("niyama", "fcfs", "edf")


class Served(Protocol):
    """What the evaluation needs of a server: where it listens (a started `niyama serve`, or a test's server)."""

    url: str


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m niyama.bench.evaluate_qos", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("docs/results/qos_evaluation"))
    p.add_argument("--latency-profile", required=True, help="profile JSON every server starts from (niyama profile)")
    p.add_argument("--trace", default="azure-conv")
    p.add_argument("--scale-lengths", default="0.0625,0.125", help="PROMPT_F,OUTPUT_F (or one F for both)")
    p.add_argument("--max-prompt-tokens", type=int, default=256)
    p.add_argument("--max-output-tokens", type=int, default=128)
    p.add_argument("--mix", default="0.5,0.5", help="interactive,batch shares")
    p.add_argument("--ttft", type=float, default=2.0)
    p.add_argument("--tbt", type=float, default=0.3)
    p.add_argument("--ttlt", type=float, default=60.0)
    p.add_argument("--step-cap", type=int, default=256, help="tokens per step of every server (see docstring)")
    p.add_argument("--kv-tokens", type=int, default=16384, help="KV cache per server (tokens)")
    p.add_argument("--duration", type=float, default=300.0, help="seconds of arrivals per goodput probe")
    p.add_argument("--repeats", type=int, default=3, help="goodput searches and floods per system (seeds differ)")
    p.add_argument("--start-rate", type=float, default=0.5)
    p.add_argument("--precision", type=float, default=0.2)
    p.add_argument("--max-probes", type=int, default=5)
    p.add_argument("--warmup", type=float, default=45.0, help="seconds of unrecorded load per system first")
    p.add_argument("--flood-interactive-rate", type=float, default=0.3)
    p.add_argument("--flood-seconds", type=float, default=60.0, help="length of the interactive stream")
    p.add_argument("--flood-batch-requests", type=int, default=40)
    p.add_argument("--flood-batch-window", type=float, default=10.0, help="the flood arrives within this many s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probe-gap", type=float, default=2.0, help="seconds of quiet between probes")
    p.add_argument("--no-silo", action="store_true", help="skip the siloed deployment")
    p.add_argument("--no-progress", action="store_true")
    return p


def server_specs(args: argparse.Namespace, tiers_path: Path) -> list[ServerSpec]:
    """One server per shared policy (and two silo servers, EDF), all with the same step cap and KV cache."""
    common = ["--qos-config", str(tiers_path), "--latency-profile", args.latency_profile, "--max-batch-total-tokens",
              str(args.kv_tokens), "--max-batch-prefill-tokens", str(args.step_cap), "--grace-period", "1",
              "--log-level", "warning"]  # fmt: skip
    specs = [ServerSpec(policy, [*common, "--policy", policy]) for policy in SHARED]
    if not args.no_silo:
        cores = os.cpu_count() or 2
        half = max(1, cores // 2)
        interactive_cores, batch_cores = list(range(half)), list(range(half, cores)) or [0]
        specs += [
            ServerSpec("silo-interactive", [*common, "--policy", "edf"], interactive_cores),
            ServerSpec("silo-batch", [*common, "--policy", "edf"], batch_cores),
        ]
    return specs


def system_servers(name: str) -> list[str]:
    return ["silo-interactive", "silo-batch"] if name == "silo" else [name]


def server_counters(group: Mapping[str, Served], names: list[str]) -> dict[str, float]:
    """Step count and time, relegations, predictor error, summed over a system's servers."""
    total = {"steps": 0.0, "step_seconds": 0.0, "relegations": 0.0, "predictor_error": 0.0}
    for name in names:
        series = scrape(group[name].url)
        for key, value in series.items():
            if key.startswith("tgi_batch_forward_duration_count"):
                total["steps"] += value
            elif key.startswith("tgi_batch_forward_duration_sum"):
                total["step_seconds"] += value
            elif key.startswith("niyama_relegations_total"):
                total["relegations"] += value
            elif key.startswith("niyama_predictor_error"):
                total["predictor_error"] = max(total["predictor_error"], value)
    return total


async def observed(group: Mapping[str, Served], system: str, run) -> tuple[ProbeResult, dict]:
    """Run the coroutine ``run`` and what the system's servers report about it (deltas of their counters)."""
    names = system_servers(system)
    before = server_counters(group, names)
    result = await run
    after = server_counters(group, names)
    steps = after["steps"] - before["steps"]
    server = {
        "steps": int(steps),
        "mean_step_s": round((after["step_seconds"] - before["step_seconds"]) / steps, 4) if steps else None,
        "relegations": int(after["relegations"] - before["relegations"]),
        "predictor_error": round(after["predictor_error"], 4),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    return result, server


async def evaluate(args: argparse.Namespace, group: Mapping[str, Served], tiers_path: Path) -> dict:
    """Warm-up per system, then ``args.repeats`` runs of interleaved goodput searches and a flood per policy."""
    tiers = load_tier_config(tiers_path)
    trace = load_trace(args.trace)
    mix = tuple(float(x) for x in args.mix.split(","))
    systems = [*SHARED, *([] if args.no_silo else ["silo"])]
    results: dict = {"warmup": {}, "runs": []}
    async with new_session(30) as session:
        reference = group["niyama"].url
        prompt_factor, output_factor = parse_scaling(args.scale_lengths)
        scaling = LengthScaling(prompt_factor, output_factor, args.max_prompt_tokens, args.max_output_tokens,
                                await max_total_tokens(session, reference))  # fmt: skip
        builder = PromptBuilder(server_tokenize(session, reference, None), args.seed)

        def scenario(system: str, duration: float, seed: int) -> Scenario:
            def url(tier: str) -> str:
                return group[f"silo-{tier}" if system == "silo" else system].url

            targets = {t: Target(url(t), APIS["tgi"]) for t in tiers.names}
            return Scenario(trace, tiers, mix, "poisson", 1.0, duration, seed, scaling, targets, builder,
                            drain_timeout=args.ttlt + 30, progress=not args.no_progress)  # fmt: skip

        for system in systems:
            warm = scenario(system, args.warmup, args.seed)
            probe, server = await observed(
                group, system, run_probe(warm, (RatePhase(args.start_rate, 1e9),), f"{system} warm-up")
            )
            results["warmup"][system] = {"summary": probe.summary, "server": server}
            log(f"warm-up {system}: {probe.summary['violation_pct']:.1f}% missed, mean step {server['mean_step_s']} s")
        for repeat in range(args.repeats):
            seed = args.seed + repeat
            goodput = await goodput_searches(args, group, systems, partial(scenario, duration=args.duration, seed=seed))
            flood = {}
            for system in SHARED:
                requests = flood_requests(args, trace, tiers, scaling, seed)
                run = measure(scenario(system, args.flood_seconds, seed), requests, f"{system} flood", None, False)
                probe, server = await observed(group, system, run)
                flood[system] = {**probe.to_json(), "server": server}
                inter = probe.summary["tiers"]["interactive"]
                log(f"flood {system} (seed {seed}): interactive TTFT p99 {inter['ttft']['p99']} s, "
                    f"TBT p99 {inter['tbt']['p99']} s")  # fmt: skip
            results["runs"].append({"seed": seed, "goodput": goodput, "flood": flood})
    return results


async def goodput_searches(
    args: argparse.Namespace, group: Mapping[str, Served], systems: list[str], scenario: Callable[[str], Scenario]
) -> dict:
    """Every system's goodput search, interleaved probe by probe, the order rotating every round."""
    searches = {s: GoodputSearch(args.start_rate, args.precision, args.max_probes) for s in systems}
    probes: dict[str, list[dict]] = {s: [] for s in systems}
    round_index = 0
    while not all(search.done for search in searches.values()):
        order = systems[round_index % len(systems) :] + systems[: round_index % len(systems)]
        for system in order:
            rate = searches[system].next_rate()
            if rate is None:
                continue
            run = run_probe(scenario(system), (RatePhase(rate, 1e9),), f"{system} @ {rate:.3f}", True)
            probe, server = await observed(group, system, run)
            searches[system].record(probe.as_probe())
            probes[system].append({**probe.to_json(), "server": server, "round": round_index})
            log(f"{system} @ {rate:.3f} req/s: {probe.misses}/{probe.requests} missed "
                f"({'ok' if probe.ok else 'too many'}), mean step {server['mean_step_s']} s, "
                f"load {server['load_average_1m']}")  # fmt: skip
            await asyncio.sleep(args.probe_gap)
        round_index += 1
    return {s: {"rps": search.goodput, "bracketed": search.bracketed, "probes": probes[s]}
            for s, search in searches.items()}  # fmt: skip


def flood_requests(args: argparse.Namespace, trace, tiers, scaling: LengthScaling, seed: int):
    """A steady interactive Poisson stream, and a burst of batch requests at its start."""
    steady = build_requests(
        trace, tiers, (1.0, 0.0), ArrivalProcess("poisson", (RatePhase(args.flood_interactive_rate, 1e9),)),
        args.flood_seconds, seed + 1, scaling,
    )  # fmt: skip
    burst_rate = args.flood_batch_requests / args.flood_batch_window
    burst = build_requests(
        trace, tiers, (0.0, 1.0), ArrivalProcess("poisson", (RatePhase(burst_rate, 1e9),)),
        args.flood_batch_window, seed + 2, scaling, args.flood_batch_requests,
    )  # fmt: skip
    return merge(steady, burst)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    tiers_path = args.out / "tiers.toml"
    tiers_path.write_text(TIERS_TOML.format(ttft=args.ttft, tbt=args.tbt, ttlt=args.ttlt))
    started = time.monotonic()
    # SIGTERM unwinds like Ctrl-C: the group stops every server it started, also one still starting.
    with sigterm_exits(), ServerGroup(server_specs(args, tiers_path), args.out / "logs") as group:
        log(f"servers up in {time.monotonic() - started:.0f} s: {', '.join(group.servers)}")
        results = asyncio.run(evaluate(args, group.servers, tiers_path))
        specs = {name: {"args": s.spec.args, "cores": s.spec.cores} for name, s in group.servers.items()}
    results["config"] = {
        "command": "python -m niyama.bench.evaluate_qos " + shlex.join(sys.argv[1:] if argv is None else argv),
        **{key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "servers": specs, "cpu_count": os.cpu_count(), "wall_seconds": round(time.monotonic() - started, 1),
    }  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    write_report(results, load_tier_config(tiers_path), args.out)
    log(f"done in {time.monotonic() - started:.0f} s: {args.out}/summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
