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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from .endpoint import server_tokenize
from .prompt_text import PromptBuilder
from .servers import free_port, healthy

HERE = Path(__file__).resolve().parent.parent  # this tree: the "after" side by default
PROBE_FILE = HERE / "router" / "loop_lag.py"
LAG = "niyama_event_loop_lag_seconds"
ROUNDTRIP = "niyama_step_roundtrip_seconds"
FORWARD = "tgi_batch_forward_duration"
STEP = "tgi_batch_inference_duration"
STARTUP_TIMEOUT = 900.0  # a first start may profile the model
MARK = "loop-lag launcher:"

# Run with `python -c LAUNCHER PROBE_FILE serve ...`: report the source, install the probe, serve.
LAUNCHER = f"""
import contextlib, importlib.util, os, sys
probe_file, argv = sys.argv[1], sys.argv[2:]
import niyama.router
print("{MARK} niyama.router", os.path.realpath(niyama.router.__file__), flush=True)
spec = importlib.util.spec_from_file_location("niyama_bench_loop_lag_probe", probe_file)
probe_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe_module)
import niyama.router.app as app_module
original = app_module.create_app

def create_app(*args, **kwargs):
    app = original(*args, **kwargs)
    try:
        registry = app.state.niyama.metrics.registry
    except AttributeError:
        print("{MARK} no app.state.niyama.metrics.registry: only a probe of the app's own is measured", flush=True)
        return app
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a):
        async with inner(a) as state:
            if registry.get_sample_value(probe_module.NAME + "_count") is not None:
                print("{MARK} the app has its own probe", flush=True)
                yield state
                return
            probe = probe_module.LoopLagProbe(registry)
            probe.start()
            print("{MARK} probe installed", flush=True)
            try:
                yield state
            finally:
                await probe.stop()

    app.router.lifespan_context = lifespan
    return app

app_module.create_app = create_app
from niyama.router.cli import main
sys.argv = ["niyama", *argv]
sys.exit(main(argv))
"""


# -- where the server comes from -------------------------------------------------------------------


def package_dirs(tree: Path) -> dict[str, str]:
    """``niyama.<name>`` -> folder, from the tree's pyproject (the four known folders without one)."""
    try:
        import tomllib

        mapping = tomllib.loads((tree / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
        return {name.split(".", 1)[1]: folder for name, folder in mapping.items() if name.startswith("niyama.")}
    except (ImportError, OSError, KeyError):
        return {name: name for name in ("router", "worker", "qos", "bench") if (tree / name).is_dir()}


def make_shim(tree: Path, where: Path) -> Path:
    """A folder for PYTHONPATH in which ``import niyama.<pkg>`` finds ``tree``'s folders."""
    package = where / "niyama"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name, folder in package_dirs(tree).items():
        (package / name).symlink_to(tree / folder, target_is_directory=True)
    return where


def describe(tree: Path) -> str:
    """The tree's commit, ``+dirty`` when its sources differ from it."""
    git = ["git", "-C", str(tree)]
    try:
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--", *package_dirs(tree).values()],
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
    except OSError:
        return str(tree)
    return (commit or "?") + ("+dirty" if dirty else "")


def child_env(shim: Path, threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim), env.get("PYTHONPATH")]))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as every niyama server and bench (bench/servers.py)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


@contextlib.contextmanager
def served(tree: Path, shim: Path, workdir: Path, name: str, args: argparse.Namespace):
    """`niyama serve` from ``tree`` through the launcher; yields its URL; always stopped (its group killed last)."""
    port = free_port()  # --log-level warning: at info, uvicorn would log every /health poll on the loop measured
    argv = [sys.executable, "-c", LAUNCHER, str(PROBE_FILE), "serve", "--hostname", "127.0.0.1", "--port", str(port),
            "--max-batch-total-tokens", str(args.max_batch_total_tokens), "--grace-period", "5",
            "--log-level", "warning"]  # fmt: skip
    log = workdir / f"{name}.log"
    with log.open("w") as sink:
        process = subprocess.Popen(argv, env=child_env(shim, args.threads), cwd=workdir, stdout=sink,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not healthy(url):
            if process.poll() is not None:
                raise RuntimeError(f"server {name} exited with {process.returncode} at start-up; see {log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {name} not healthy after {STARTUP_TIMEOUT:.0f} s; see {log}")
            time.sleep(0.5)
        origin = re.search(rf"{MARK} niyama.router (\S+)", log.read_text())
        if origin is None or not Path(origin.group(1)).is_relative_to(tree.resolve()):
            raise RuntimeError(f"server {name} imported niyama.router from {origin and origin.group(1)}, not {tree}")
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever it started (a worker process) goes with it
        process.wait(10)


# -- /metrics ----------------------------------------------------------------------------------------

Snapshot = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Snapshot:
    with urllib.request.urlopen(url + "/metrics", timeout=30) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@dataclass
class Histogram:
    buckets: list[tuple[float, float]]  # (upper bound, cumulative count), increasing
    sum: float
    count: float

    def minus(self, before: Histogram | None) -> Histogram:
        if before is None:
            return self
        earlier = dict(before.buckets)
        buckets = [(le, count - earlier.get(le, 0.0)) for le, count in self.buckets]
        return Histogram(buckets, self.sum - before.sum, self.count - before.count)

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None

    def quantile(self, q: float) -> float | None:
        """Prometheus' histogram_quantile: linear within the bucket holding rank q * count."""
        if self.count <= 0:
            return None
        rank, low, below = q * self.count, 0.0, 0.0
        for le, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(le):
                    return low  # beyond the last finite bound: that bound
                return le if cumulative == below else low + (le - low) * (rank - below) / (cumulative - below)
            low, below = le, cumulative
        return low

    def max_bound(self) -> float | None:
        """The upper bound of the highest bucket that holds a sample (inf: above every finite bound)."""
        below, top = 0.0, None
        for le, cumulative in self.buckets:
            if cumulative > below:
                top = le
            below = cumulative
        return top


def histogram(snapshot: Snapshot, name: str, **match: str) -> Histogram | None:
    """The series ``name`` summed over the label sets that carry ``match`` (None when absent)."""
    buckets: dict[float, float] = defaultdict(float)
    total = count = 0.0
    found = False
    for (sample, labels), value in snapshot.items():
        labelled = dict(labels)
        if any(labelled.get(key) != wanted for key, wanted in match.items()):
            continue
        if sample == name + "_bucket":
            buckets[float(labelled["le"])] += value
            found = True
        elif sample == name + "_sum":
            total += value
        elif sample == name + "_count":
            count += value
    return Histogram(sorted(buckets.items()), total, count) if found else None


def has_label(snapshot: Snapshot, name: str, label: str) -> bool:
    return any(sample.startswith(name) and label in dict(labels) for sample, labels in snapshot)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def ms(value: float | None) -> float | None:
    return None if value is None else value * 1e3


# -- one measurement ---------------------------------------------------------------------------------


async def poll_health(session: aiohttp.ClientSession, url: str, interval: float, stop: asyncio.Event) -> list[float]:
    times = []
    while not stop.is_set():
        start = time.perf_counter()
        async with session.get(url + "/health") as answer:
            await answer.read()
        times.append(time.perf_counter() - start)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
    return times


async def generate(session: aiohttp.ClientSession, url: str, text: str, tokens: int) -> int:
    body = {"inputs": text, "parameters": {"max_new_tokens": tokens, "ignore_eos": True, "details": True}}
    async with session.post(url + "/generate", json=body) as answer:
        reply = await answer.json(content_type=None)
        if answer.status != 200:
            raise RuntimeError(f"/generate answered {answer.status}: {str(reply)[:200]}")
    return reply["details"]["generated_tokens"]


async def window(url: str, poll: float, work) -> dict:
    """Scrape, poll /health while ``work(session)`` runs, scrape: the series before and after, the client's view."""
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as load, aiohttp.ClientSession(timeout=timeout) as probe:
        before = await asyncio.to_thread(scrape, url)
        stop = asyncio.Event()
        poller = asyncio.ensure_future(poll_health(probe, url, poll, stop))
        start = time.perf_counter()
        try:
            await work(load)
        finally:
            seconds = time.perf_counter() - start
            stop.set()
            health = await poller
        after = await asyncio.to_thread(scrape, url)
    return {"before": before, "after": after, "health": health, "seconds": seconds}


def at_once(url: str, texts: list[str], tokens: int):
    async def work(session: aiohttp.ClientSession) -> None:
        await asyncio.gather(*(generate(session, url, text, tokens) for text in texts))

    return work


def delta(result: dict, name: str, **match: str) -> Histogram | None:
    after = histogram(result["after"], name, **match)
    return None if after is None else after.minus(histogram(result["before"], name, **match))


async def measure(url: str, args: argparse.Namespace) -> dict:
    """Idle floor, long prefills, and (``--ipc``) a decode-only load, all on the server at ``url``."""
    async with aiohttp.ClientSession() as session:
        builder = PromptBuilder(server_tokenize(session, url, None), seed=args.seed)
        wanted = [(key, args.prompt_tokens) for key in range(args.requests + 1)]
        wanted += [(100 + key, args.ipc_prompt_tokens) for key in range(args.ipc_requests if args.ipc else 0)]
        prompts = await builder.build_all(wanted)
        await generate(session, url, prompts[0].text, 2)  # warm-up: one long prefill, not measured
    long, short = prompts[1 : args.requests + 1], prompts[args.requests + 1 :]
    out: dict = {}
    if not args.skip_lag:
        idle = await window(url, args.poll_interval, lambda _: asyncio.sleep(args.idle_seconds))
        busy = await window(url, args.poll_interval, at_once(url, [p.text for p in long], args.max_new_tokens))
        lag, idle_lag = delta(busy, LAG), delta(idle, LAG)
        if lag is None:
            raise RuntimeError(f"{url}/metrics has no {LAG}")
        prefill = delta(busy, FORWARD, method="prefill")
        out.update({
            "prompt_tokens": [p.tokens for p in long], "window_s": busy["seconds"], "lag_samples": lag.count,
            "lag_p50_ms": ms(lag.quantile(0.5)), "lag_p99_ms": ms(lag.quantile(0.99)),
            "lag_max_ms": ms(lag.max_bound()), "lag_mean_ms": ms(lag.mean),
            "idle_lag_p99_ms": ms(idle_lag.quantile(0.99)),
            "health_polls": len(busy["health"]), "health_p50_ms": ms(percentile(busy["health"], 0.5)),
            "health_p99_ms": ms(percentile(busy["health"], 0.99)),
            "health_max_ms": ms(max(busy["health"], default=None)),
            "idle_health_p99_ms": ms(percentile(idle["health"], 0.99)),
            "prefill_steps": prefill.count if prefill else None,
            "prefill_step_mean_ms": ms(prefill.mean) if prefill else None,
        })  # fmt: skip
    if args.ipc:
        decode = await window(url, args.poll_interval, at_once(url, [p.text for p in short], args.ipc_tokens))
        decode_lag = delta(decode, LAG)
        out.update(ipc(decode), decode_lag_p99_ms=ms(decode_lag.quantile(0.99)) if decode_lag else None)
    return out


def ipc(result: dict) -> dict:
    """Per decode step: what the engine waits for beyond the worker's own compute.

    ``step_overhead_us``: mean ``tgi_batch_inference_duration`` (the engine's
    step, timed around the worker call) minus mean ``tgi_batch_forward_duration``
    (timed inside the worker), decode steps: a thread hand-off when the worker
    is a thread of the server, hand-off plus IPC when it is another process.
    ``ipc_us``: the same from ``niyama_step_roundtrip_seconds``, where served.
    """
    forward = delta(result, FORWARD, method="decode")
    step = delta(result, STEP, method="decode")
    if forward is None or not forward.count or step is None or not step.count:
        return {"ipc_note": f"no decode steps in {FORWARD} / {STEP}"}
    step_us = forward.mean * 1e6
    overhead = (step.mean - forward.mean) * 1e6
    out = {"decode_steps": forward.count, "decode_forward_us": step_us, "decode_step_us": step.mean * 1e6,
           "step_overhead_us": overhead, "step_overhead_share": overhead / step_us}  # fmt: skip
    if histogram(result["after"], ROUNDTRIP) is None:
        return out | {"ipc_note": f"no {ROUNDTRIP} in /metrics: IPC read as the step overhead ({STEP} - {FORWARD})"}
    labelled = has_label(result["after"], ROUNDTRIP, "method")
    roundtrip = delta(result, ROUNDTRIP, **({"method": "decode"} if labelled else {}))
    compute = forward if labelled else delta(result, FORWARD)
    cost = (roundtrip.mean - compute.mean) * 1e6
    return out | {"ipc_us": cost, "ipc_share_of_decode": cost / step_us, "roundtrip_us": roundtrip.mean * 1e6}


def router_overhead(tree: Path, shim: Path, workdir: Path, threads: int | None) -> dict:
    """`niyama bench router-overhead` run from the shim's tree (its server child inherits the path)."""
    code = (
        f"import os, sys, niyama.router; print('{MARK} niyama.router', os.path.realpath(niyama.router.__file__)); "
        "from niyama.bench.cli import main; sys.exit(main(['router-overhead']))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=child_env(shim, threads), cwd=workdir,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    tokens = re.search(r"([\d,]+) streamed tokens/s", done.stdout)
    gap = re.search(r"one lone stream: ([\d.]+) us", done.stdout)
    if done.returncode != 0 or tokens is None:
        raise RuntimeError(f"router-overhead failed ({done.returncode}): {(done.stdout + done.stderr)[-800:]}")
    origin = re.search(rf"{MARK} niyama.router (\S+)", done.stdout)
    if origin is None or not Path(origin.group(1)).is_relative_to(tree.resolve()):
        raise RuntimeError(f"router-overhead imported niyama.router from {origin and origin.group(1)}, not {tree}")
    return {"overhead_tokens_per_s": float(tokens.group(1).replace(",", "")),
            "overhead_lone_gap_us": float(gap.group(1)) if gap else None}  # fmt: skip


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
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # SIGTERM stops the server too
    workdir = Path(tempfile.mkdtemp(prefix="niyama-loop-lag-"))
    shims = {name: make_shim(tree, workdir / f"shim-{name}") for name, tree in trees.items()}
    sides = {name: {"tree": str(tree), "commit": describe(tree), "runs": []} for name, tree in trees.items()}
    info = machine()
    print(f"server logs: {workdir}", flush=True)
    try:
        for run in range(args.runs):
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
    finally:
        signal.signal(signal.SIGTERM, previous)
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
