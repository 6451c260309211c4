"""`niyama bench loop-lag`: how long the server's event loop stalls while the model computes.

Starts `niyama serve` (default model, a fixed KV cache), one server at a time,
and while it prefills long prompts (``--requests`` prompts of
``--prompt-tokens`` tokens, sent at once through /generate) reads two views
of the same stall:

- ``niyama_event_loop_lag_seconds`` from /metrics before and after the window:
  the oversleep of a probe coroutine (router/loop_lag.py) that sleeps 5 ms
  over and over. p50/p99/max are estimated from the bucket deltas (linear
  interpolation within a bucket, as Prometheus' histogram_quantile; max is
  the upper bound of the highest bucket hit).
- the round trip of GET /health, polled every ``--poll-interval`` by a
  concurrent client during the same window.

An idle window before the load gives the floor (timer granularity).

``--source TREE`` serves from another checkout with the same layout (an older
commit as a git worktree): a shim folder on PYTHONPATH holds
``niyama/__init__.py`` and links ``niyama/<pkg>`` to the tree's folders, which
wins over the editable install (its finder comes last in ``sys.meta_path``);
the child prints where ``niyama.router`` came from and the run stops if that
is not the tree. The server always starts through the same launcher, which
installs the probe from *this* tree's router/loop_lag.py (loaded by path)
into the app's lifespan unless the app registers its own, so both sides
measure with the same code. ``--compare BEFORE`` alternates before and after
(before, after, before, after, ...) in one invocation and prints them side by
side; ``--runs`` repeats (median [min-max]).

``--ipc``: on the same server, a decode-only load (``--ipc-requests`` short
prompts, ``--ipc-tokens`` new tokens each) and the per-step cost of the worker
boundary: the engine's mean decode step (``tgi_batch_inference_duration``,
timed around the worker call) minus the worker's mean compute
(``tgi_batch_forward_duration``, timed inside the worker), in µs and as a
share of a decode step: a thread hand-off when the forward pass runs on a
thread of the server, hand-off plus IPC when it runs in another process. A
server that also exports ``niyama_step_roundtrip_seconds`` gets the same
difference from that series (``ipc_us``).
``--router-overhead``: also runs `niyama bench router-overhead` from each tree.
``--quiet-below``: on a shared machine, each run first waits for other work to
leave the cores (the busy share is recorded with each run).

This module is the command and its report; one side's run (the launcher, the
shim, the windows, the series) is bench/loop_lag_runs.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from .loop_lag_runs import HERE, describe, make_shim, measure, router_overhead, served

# -- report ------------------------------------------------------------------------------------------

ROWS = (
    ("lag_p50_ms", "event-loop lag p50 (ms)"), ("lag_p99_ms", "event-loop lag p99 (ms)"),
    ("lag_max_ms", "event-loop lag max (ms, bucket bound)"), ("lag_mean_ms", "event-loop lag mean (ms)"),
    ("idle_lag_p99_ms", "idle event-loop lag p99 (ms)"),
    ("decode_lag_p99_ms", "event-loop lag p99, decodes (ms)"), ("health_p50_ms", "/health round trip p50 (ms)"),
    ("health_p99_ms", "/health round trip p99 (ms)"), ("health_max_ms", "/health round trip max (ms)"),
    ("idle_health_p99_ms", "idle /health round trip p99 (ms)"), ("prefill_steps", "prefill steps in the window"),
    ("prefill_step_mean_ms", "prefill step mean (ms, worker)"), ("window_s", "load window (s)"),
    ("decode_forward_us", "decode step, worker compute (us)"), ("decode_step_us", "decode step, engine side (us)"),
    ("step_overhead_us", "step overhead: engine - worker (us)"), ("step_overhead_share", "step overhead / decode step"),
    ("roundtrip_us", "decode round trip, roundtrip series (us)"), ("ipc_us", "IPC: roundtrip - worker (us)"),
    ("ipc_share_of_decode", "IPC / decode step"),
    ("overhead_tokens_per_s", "router-overhead streamed tokens/s"),
    ("overhead_lone_gap_us", "router-overhead lone gap (us)"), ("busy_before", "cores busy before the run (others)"),
)  # fmt: skip


def summarize(runs: list[dict]) -> dict[str, dict[str, float]]:
    summary = {}
    for key, _ in ROWS:
        values = [run[key] for run in runs if isinstance(run.get(key), (int, float))]
        if values:
            median, low, high = statistics.median(values), min(values), max(values)
            summary[key] = {"median": median, "min": low, "max": high, "n": len(values)}
    return summary


def cell(stats: dict[str, float] | None) -> str:
    if stats is None:
        return "-"

    def fmt(x: float) -> str:
        return "inf" if math.isinf(x) else f"{x:,.3f}" if abs(x) < 1 else f"{x:,.1f}" if abs(x) < 100 else f"{x:,.0f}"

    spread = "" if stats["n"] == 1 else f" [{fmt(stats['min'])}-{fmt(stats['max'])}]"
    return fmt(stats["median"]) + spread


def render(sides: dict[str, dict], args: argparse.Namespace) -> str:
    names = list(sides)
    lines = [f"niyama bench loop-lag, {args.runs} run(s) per side, median [min-max]"]
    if not args.skip_lag:
        lines.append(f"lag window: {args.requests} x {args.prompt_tokens}-token prompts at once through /generate, "
                     f"max_new_tokens {args.max_new_tokens}")  # fmt: skip
    if args.ipc:
        lines.append(f"decode window (--ipc): {args.ipc_requests} x {args.ipc_prompt_tokens}-token prompts at once, "
                     f"{args.ipc_tokens} new tokens each")  # fmt: skip
    header = f"{'':<40}" + "".join(f"{name + ' (' + sides[name]['commit'] + ')':>30}" for name in names)
    lines.append(header)
    for key, label in ROWS:
        cells = [cell(sides[name]["summary"].get(key)) for name in names]
        if any(c != "-" for c in cells):
            lines.append(f"{label:<40}" + "".join(f"{c:>30}" for c in cells))
    notes = {run.get("ipc_note") for side in sides.values() for run in side["runs"] if run.get("ipc_note")}
    lines += [f"note: {note}" for note in sorted(notes)]
    return "\n".join(lines)


def cpu_busy(seconds: float = 2.0) -> float:
    """The share of all cores busy over ``seconds`` (/proc/stat; 0 where there is none)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    if not Path("/proc/stat").exists():
        return 0.0
    (total0, idle0), _, (total1, idle1) = sample(), time.sleep(seconds), sample()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def wait_quiet(below: float, timeout: float) -> float:
    """Wait (up to ``timeout`` s) until other work leaves the cores below ``below`` busy; the last reading."""
    deadline, busy = time.monotonic() + timeout, cpu_busy()
    while below > 0 and busy > below and time.monotonic() < deadline:
        print(f"  machine {busy:.0%} busy (other work): waiting for < {below:.0%}", flush=True)
        time.sleep(20)
        busy = cpu_busy()
    return busy


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    model = models[0] if models else platform.processor()
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_start": os.getloadavg()}  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="niyama bench loop-lag", description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, default=HERE, help="serve from this source tree (default: this one)")
    p.add_argument("--compare", type=Path, metavar="BEFORE", help="alternate runs from tree BEFORE and --source")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--requests", type=int, default=4, help="long prompts sent at once")
    p.add_argument("--prompt-tokens", type=int, default=1500)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--max-batch-total-tokens", type=int, default=16384, help="the server's KV cache (tokens)")
    p.add_argument("--idle-seconds", type=float, default=2.0, help="idle window before the load")
    p.add_argument("--poll-interval", type=float, default=0.01, help="seconds between /health polls")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the server (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-lag", action="store_true", help="no lag window (with --ipc or --router-overhead)")
    p.add_argument("--ipc", action="store_true", help="also a decode-only load: per-step IPC cost")
    p.add_argument("--ipc-requests", type=int, default=8)
    p.add_argument("--ipc-prompt-tokens", type=int, default=32)
    p.add_argument("--ipc-tokens", type=int, default=64, help="new tokens per decode-only request")
    p.add_argument("--router-overhead", action="store_true", help="also `niyama bench router-overhead` per tree")
    p.add_argument("--quiet-below", type=float, default=0.3, help="before each run, wait until the cores are "
                   "less busy than this share (other work on a shared machine; 0: do not wait)")  # fmt: skip
    p.add_argument("--quiet-timeout", type=float, default=900.0, help="seconds to wait for that at most")
    p.add_argument("--json", type=Path, default=None, help="save every run and the summary here")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    trees = {"before": args.compare.resolve(), "after": args.source.resolve()} if args.compare else {
        "this": args.source.resolve()}  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="niyama-loop-lag-"))
    shims = {name: make_shim(tree, workdir / f"shim-{name}") for name, tree in trees.items()}
    sides = {name: {"tree": str(tree), "commit": describe(tree), "runs": []} for name, tree in trees.items()}
    info = machine()
    print(f"server logs: {workdir}", flush=True)
    for run in range(args.runs):  # `niyama bench` turns SIGTERM into an exit, so `served` stops its server
        for name, tree in trees.items():  # alternating: before, after, before, after, ...
            busy = wait_quiet(args.quiet_below, args.quiet_timeout)
            result: dict = {"run": run, "busy_before": busy, "loadavg_before": os.getloadavg()[0]}
            if not args.skip_lag or args.ipc:
                with served(tree, shims[name], workdir, f"{name}-{run}", args) as url:
                    result.update(asyncio.run(measure(url, args)))
            if args.router_overhead:
                result.update(router_overhead(tree, shims[name], workdir, args.threads))
            sides[name]["runs"].append(result)
            print(f"{name} run {run + 1}/{args.runs}: " + ", ".join(
                f"{k}={v:.3g}" for k, v in result.items() if isinstance(v, float)), flush=True)  # fmt: skip
    info["loadavg_end"] = os.getloadavg()
    for side in sides.values():
        side["summary"] = summarize(side["runs"])
    print(render(sides, args))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        document = {"command": "niyama bench loop-lag " + " ".join(argv), "machine": info, "config": config,
                    "sides": sides}  # fmt: skip
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0
