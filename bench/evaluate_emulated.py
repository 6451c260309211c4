"""`niyama bench emulated`: the QoS evaluation at GPU scale, through the real server on an emulated A100.

One `niyama serve --emulate a100-llama3-8b --truth-noise 0.1` per policy
(fcfs, edf, niyama): the real router, engine loop, scheduler and KV
accounting, with a worker that sleeps each step's truth time (the latency
model times mean-1 lognormal noise) instead of running a model. First each
policy's goodput is found by simulation under the same truth noise
(`engine.capacity.goodput_search`), then every policy is probed at
``--rate-factors`` times its own simulated goodput with `niyama bench
serve`'s machinery: real HTTP, real streaming, the real client, Poisson
arrivals from the trace at full length (no scaling), ``ignore_eos`` so each
output has the trace's length. The three servers and their probes run side
by side, one rate step at a time, their clients in one asyncio loop (the
emulated worker barely uses a CPU; the results record the client's CPU share
and its worst send lag, which say whether the client kept up).

Beside each real probe the simulator replays exactly the requests the probe
sent (same arrivals, lengths and tiers; same truth noise and seed), so each
tier's miss rate is compared real against simulated. From the probes, each
policy's rate at 1% misses is interpolated (`emulated_report`), and the
router's own figures are read for every probe: peak concurrent streams
(client side), event-loop lag p99 and scheduler time per step p99 (the
servers' /metrics histograms, scraped before and after), streamed tokens/s.
An optional stress probe (``--stress-requests``) opens many long streams at
once on one server to see the router hold at that scale.

Writes results.json, summary.md and plots to ``--out``; stopped early
(Ctrl-C, SIGTERM) it stops every server it started. docs/results/
qos_emulated.md explains the set-up. Run from a checkout (the default tier
file is ``examples/paper_short_tiers.toml``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from niyama.engine.capacity import goodput_search
from niyama.engine.report import summarize as sim_summary
from niyama.engine.simulator import SimSetup, simulate
from niyama.qos.config import TierConfig, load_tier_config
from niyama.qos.options import TruthConfig
from niyama.qos.policy import policy_config
from niyama.qos.traces import load_trace
from niyama.qos.workload import RatePhase, parse_mix

from .apis import APIS
from .client import Record, Target, new_session
from .emulated_report import analyse, write_report
from .endpoint import max_total_tokens, server_tokenize
from .loop_lag_runs import Histogram
from .probe import ProbeResult, Scenario, measure
from .prometheus import exposition
from .prompt_text import Prompt, PromptBuilder
from .servers import ServerGroup, ServerSpec, sigterm_exits
from .workload import BenchRequest, LengthScaling, sim_requests

POLICIES = ("fcfs", "edf", "niyama")
SEARCH_START = {"fcfs": 2.5, "edf": 8.0, "niyama": 12.0}  # near each one's simulated goodput: fewer probes
LOOP_LAG = "niyama_event_loop_lag_seconds"
SCHEDULE = "niyama_schedule_seconds"
FORWARD = "tgi_batch_forward_duration"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="niyama bench emulated", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("docs/results/qos_emulated"))
    p.add_argument("--policies", default=",".join(POLICIES), help="comma-separated, one server each")
    p.add_argument("--emulate", default="a100-llama3-8b", help="the emulated device (niyama serve --emulate)")
    p.add_argument("--tiers", type=Path, default=Path("examples/paper_short_tiers.toml"))
    p.add_argument("--trace", default="azure-code")
    p.add_argument("--mix", help="share of requests per tier, in tier-file order (default: equal)")
    p.add_argument("--truth-noise", type=float, default=0.1)
    p.add_argument("--truth-bias", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=600.0, help="seconds of arrivals per probe (and per search)")
    p.add_argument("--rate-factors", default="0.8,1.0,1.2", help="probe rates as multiples of each goodput")
    p.add_argument("--goodput", action="append", default=[], metavar="POLICY=RPS",
                   help="take this goodput instead of simulating it (repeatable)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="of the arrivals, the emulated noise and the simulator's")
    p.add_argument("--max-concurrent-requests", type=int, default=4096)
    p.add_argument("--drain-margin", type=float, default=30.0, help="drain timeout: longest deadline plus this")
    p.add_argument("--probe-gap", type=float, default=5.0, help="seconds of quiet between rate steps")
    p.add_argument("--stress-requests", type=int, default=600, help="streams opened by the stress probe (0: none)")
    p.add_argument("--stress-window", type=float, default=5.0, help="they arrive within this many seconds")
    p.add_argument("--stress-prompt-tokens", type=int, default=64)
    p.add_argument("--stress-output-tokens", type=int, default=512)
    p.add_argument("--stress-policy", default="niyama", help="the server the stress probe runs against")
    return p


def floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


class SharedPrompts(PromptBuilder):
    """Prompts keyed by length alone: an emulated device never reads them, and 20,000 prompts of
    ~2,000 tokens cost one tokenization per distinct length instead of one per request."""

    async def build(self, key: int, length: int) -> Prompt:
        return await super().build(length, length)


def sim_setup(args: argparse.Namespace, tiers: TierConfig, policy: str) -> SimSetup:
    """The simulated twin of one emulated server: same device, tiers, policy, KV cache, truth and seed."""
    truth = TruthConfig(noise=args.truth_noise, bias=args.truth_bias)
    return SimSetup(tiers, policy_config(policy), latency_model=args.emulate, truth=truth, seed=args.seed)


def goodputs(args: argparse.Namespace, tiers: TierConfig, mix: Sequence[float], policies: list[str]) -> dict:
    """Each policy's simulated goodput (req/s) on the probes' workload, unless ``--goodput`` gives it."""
    given = {name: float(rate) for name, rate in (item.split("=", 1) for item in args.goodput)}
    found = {}
    for policy in policies:
        if policy in given:
            found[policy] = {"rps": given[policy], "source": "--goodput"}
            continue
        started = time.monotonic()
        rate, probes = goodput_search(sim_setup(args, tiers, policy), load_trace(args.trace), mix, args.duration,
                                      args.seed, True, SEARCH_START.get(policy, 4.0))  # fmt: skip
        found[policy] = {"rps": rate, "source": "simulated", "probes": len(probes)}
        log(f"{policy}: simulated goodput {rate:.3f} req/s ({len(probes)} probes, {time.monotonic() - started:.0f} s)")
    return found


def server_specs(args: argparse.Namespace, policies: list[str]) -> list[ServerSpec]:
    common = ["--emulate", args.emulate, "--truth-noise", str(args.truth_noise), "--truth-bias", str(args.truth_bias),
              "--emulate-seed", str(args.seed), "--tiers", str(args.tiers.resolve()), "--max-concurrent-requests",
              str(args.max_concurrent_requests), "--grace-period", "1", "--log-level", "warning"]  # fmt: skip
    return [ServerSpec(policy, [*common, "--policy", policy]) for policy in policies]


def peak_streams(records: Sequence[Record]) -> int:
    """Most requests open at once, as the client saw them: from the send to the last token (or the send)."""
    events = sorted(
        [(r.sent, 1) for r in records if r.sent is not None]
        + [((r.token_times or [r.sent])[-1], -1) for r in records if r.sent is not None]
    )  # an end sorts before a start at the same time
    peak = open_now = 0
    for _, change in events:
        open_now += change
        peak = max(peak, open_now)
    return peak


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1e3, 3)


def router_figures(probe: ProbeResult, before: str, after: str) -> dict:
    """Peak streams, event-loop lag and scheduler-time p99 over the probe (scrape deltas), streamed tokens/s."""
    figures: dict = {"peak_streams": peak_streams(probe.run.records)}
    for key, name in (("loop_lag", LOOP_LAG), ("schedule", SCHEDULE)):
        late = Histogram.read(after, name)
        window = None if late is None else late.minus(Histogram.read(before, name))
        figures[f"{key}_p99_ms"] = None if window is None else ms(window.quantile(0.99))
        figures[f"{key}_samples"] = None if window is None else int(window.count)
    late = Histogram.read(after, FORWARD)
    forward = None if late is None else late.minus(Histogram.read(before, FORWARD))
    figures["mean_step_ms"] = None if forward is None else ms(forward.mean)  # the worker's own time per step
    tokens = sum(len(r.token_times) for r in probe.run.records)
    figures["tokens_per_s"] = round(tokens / probe.run.wall_seconds, 1) if probe.run.wall_seconds > 0 else None
    figures["max_send_lag_s"] = round(probe.run.max_send_lag, 4)
    return figures


async def observed(url: str, run) -> tuple[ProbeResult, dict]:
    """Await the probe ``run`` between two scrapes of ``url``/metrics: the probe and the router's figures."""
    before = await asyncio.to_thread(exposition, url)
    probe = await run
    after = await asyncio.to_thread(exposition, url)
    return probe, router_figures(probe, before, after)


async def clocked(run) -> tuple[object, dict]:
    """Await ``run``; and how busy this process (the client) was meanwhile: its CPU time over the wall time."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = await run
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return result, {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "cpu_share": round(cpu / wall, 3),
                    "load_average": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip


def probe_json(probe: ProbeResult, router: dict) -> dict:
    """What results.json keeps of a probe (not its records: tens of MB at these rates)."""
    summary = probe.summary
    return {"rate": probe.rate, "planned_requests": probe.requests, "stopped_early": probe.run.stopped_early,
            "real": summary, "router": router}  # fmt: skip


def stress_requests(args: argparse.Namespace, tiers: TierConfig) -> list[BenchRequest]:
    """``--stress-requests`` long streams spread evenly over ``--stress-window`` s, the tiers in turn."""
    n = args.stress_requests
    return [BenchRequest(i, tiers.names[i % len(tiers.names)], i * args.stress_window / n,
                         args.stress_prompt_tokens, args.stress_output_tokens) for i in range(n)]  # fmt: skip


async def rate_step(args: argparse.Namespace, urls: Mapping[str, str], tiers: TierConfig, scenario, rates: dict,
                    step: int) -> dict:  # fmt: skip
    """Every policy's probe at its rate of this step, at once; then the simulator on each probe's requests."""
    planned = {p: scenario(p, args.duration).requests((RatePhase(rates[p][step], 1e9),)) for p in urls}
    builder = scenario(next(iter(urls)), args.duration).builder
    await builder.build_all([(r.index, r.prompt_tokens) for requests in planned.values() for r in requests])
    log(f"step {step + 1}: " + ", ".join(f"{p} {rates[p][step]:.3f} req/s ({len(planned[p])} requests)" for p in urls))
    results, client = await clocked(asyncio.gather(*(
        observed(urls[p], measure(scenario(p, args.duration), planned[p], p, rates[p][step], False)) for p in urls
    )))  # fmt: skip
    probes = {}
    for policy, (probe, router) in zip(urls, results):
        result = simulate(sim_setup(args, tiers, policy), sim_requests(planned[policy]))
        sim = {**sim_summary(result), "steps": result.steps}
        probes[policy] = {**probe_json(probe, router), "sim": sim}
        log(f"  {policy} @ {probe.rate:.3f}: real {probe.summary['violation_pct']:.2f}% missed, "
            f"sim {sim['violation_pct']:.2f}%; peak {router['peak_streams']} streams, "
            f"lag p99 {router['loop_lag_p99_ms']} ms, schedule p99 {router['schedule_p99_ms']} ms")  # fmt: skip
    return {"client": client, "probes": probes}


async def stress_probe(args: argparse.Namespace, urls: Mapping[str, str], tiers: TierConfig, scenario) -> dict:
    """``--stress-requests`` long streams at once on one server: the router's figures at that scale."""
    policy = args.stress_policy if args.stress_policy in urls else next(iter(urls))
    run = measure(scenario(policy, args.stress_window), stress_requests(args, tiers), "stress", None, False)
    (probe, router), client = await clocked(observed(urls[policy], run))
    log(f"stress on {policy}: peak {router['peak_streams']} streams, lag p99 {router['loop_lag_p99_ms']} ms, "
        f"schedule p99 {router['schedule_p99_ms']} ms, {router['tokens_per_s']} tokens/s")  # fmt: skip
    return {"policy": policy, "requests": args.stress_requests, "window_s": args.stress_window,
            "prompt_tokens": args.stress_prompt_tokens, "output_tokens": args.stress_output_tokens,
            "completed": probe.summary["completed"], "router": router, "client": client}  # fmt: skip


async def evaluate(
    args: argparse.Namespace, urls: Mapping[str, str], tiers: TierConfig, mix, rates: dict, save: Callable[[dict], None]
) -> dict:
    """Every rate step with all policies side by side, each probe simulated beside; then the stress probe.

    ``save`` gets what is measured after each step, so a long run stopped early keeps its finished steps.
    """
    trace = load_trace(args.trace)
    drain = max(t.targets.ttlt or t.targets.ttft or 0.0 for t in tiers.tiers) + args.drain_margin
    async with new_session(30) as session:
        reference = next(iter(urls.values()))
        scaling = LengthScaling(max_total=await max_total_tokens(session, reference))
        builder = SharedPrompts(server_tokenize(session, reference, None), args.seed)

        def scenario(policy: str, duration: float) -> Scenario:
            targets = {tier: Target(urls[policy], APIS["tgi"]) for tier in tiers.names}
            return Scenario(trace, tiers, mix, "poisson", 1.0, duration, args.seed, scaling, targets, builder,
                            drain_timeout=drain, request_timeout=duration + drain + 60, progress=False)  # fmt: skip

        steps = []
        for step, factor in enumerate(floats(args.rate_factors)):
            steps.append({"factor": factor, **await rate_step(args, urls, tiers, scenario, rates, step)})
            save({"steps": steps, "stress": None})
            await asyncio.sleep(args.probe_gap)
        stress = await stress_probe(args, urls, tiers, scenario) if args.stress_requests > 0 else None
    return {"steps": steps, "stress": stress}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write(args: argparse.Namespace, argv: list[str], tiers: TierConfig, results: dict, started: float) -> None:
    """results.json, summary.md and the plot from what has been measured so far (``results["partial"]`` until done)."""
    results["config"] = {
        "command": "niyama bench emulated " + shlex.join(argv),
        **{key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "client": "one asyncio loop, every policy's probe side by side", "cpu_count": os.cpu_count(),
        "wall_seconds": round(time.monotonic() - started, 1), **results.get("config", {}),
    }  # fmt: skip
    results["analysis"] = analyse(results)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    write_report(results, tiers, args.out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    policies = [p for p in args.policies.split(",") if p]
    tiers = load_tier_config(args.tiers)
    mix = parse_mix(args.mix, tiers) if args.mix else tuple(1 / len(tiers.tiers) for _ in tiers.tiers)
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.tiers, args.out / "tiers.toml")
    started = time.monotonic()
    found = goodputs(args, tiers, mix, policies)
    rates = {p: [round(f * found[p]["rps"], 4) for f in floats(args.rate_factors)] for p in policies}
    with sigterm_exits(), ServerGroup(server_specs(args, policies), args.out / "logs") as group:
        log(f"servers up: {', '.join(f'{p} {s.url}' for p, s in group.servers.items())}")
        config = {"mix": mix, "servers": {name: server.spec.args for name, server in group.servers.items()}}

        def save(measured: dict, partial: bool = True) -> None:
            write(args, argv, tiers, {"goodput": found, "rates": rates, **measured, "partial": partial,
                                      "config": config}, started)  # fmt: skip

        save(asyncio.run(evaluate(args, {p: group[p].url for p in policies}, tiers, mix, rates, save)), False)
    log(f"done in {time.monotonic() - started:.0f} s: {args.out}/summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
