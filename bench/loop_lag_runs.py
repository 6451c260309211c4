"""One side's run of `niyama bench loop-lag`: serve a tree, load it in windows, read its series.

``served`` starts `niyama serve` from a source tree through the launcher
below (a shim folder on PYTHONPATH makes ``import niyama.<pkg>`` find that
tree; the launcher installs *this* tree's probe, router/loop_lag.py, loaded by
path) with bench/servers.py's ``launch``, ``wait_healthy`` and ``stop``.
``measure`` runs the idle, prefill and decode windows on it; each window
scrapes /metrics before and after (bench/prometheus.py) and polls /health
meanwhile. ``router_overhead`` runs `niyama bench router-overhead` from a
tree the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from .endpoint import server_tokenize
from .prometheus import exposition, histogram
from .prompt_text import PromptBuilder
from .servers import ServerSpec, command, free_port, launch, serve_argv, stop, wait_healthy

HERE = Path(__file__).resolve().parent.parent  # this tree: the "after" side by default
PROBE_FILE = HERE / "router" / "loop_lag.py"
LAG = "niyama_event_loop_lag_seconds"
ROUNDTRIP = "niyama_step_roundtrip_seconds"
FORWARD = "tgi_batch_forward_duration"
STEP = "tgi_batch_inference_duration"
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
    """A bench server's environment (bench/servers.py: OMP settings) with the shim first on PYTHONPATH."""
    _, env = command(ServerSpec("loop-lag", [], threads=threads), 0)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim), env.get("PYTHONPATH")]))
    return env


def check_origin(output: str, tree: Path, what: str) -> None:
    """Raise unless ``output`` shows the launcher's line with ``niyama.router`` imported from ``tree``."""
    origin = re.search(rf"{MARK} niyama.router (\S+)", output)
    if origin is None or not Path(origin.group(1)).is_relative_to(tree.resolve()):
        raise RuntimeError(f"{what} imported niyama.router from {origin and origin.group(1)}, not {tree}")


@contextlib.contextmanager
def served(tree: Path, shim: Path, workdir: Path, name: str, args: argparse.Namespace):
    """`niyama serve` from ``tree`` through the launcher; yields its URL; always stopped (its group killed last)."""
    port = free_port()  # --log-level warning: at info, uvicorn would log every /health poll on the loop measured
    serve = serve_argv(["--max-batch-total-tokens", str(args.max_batch_total_tokens), "--grace-period", "5",
                        "--log-level", "warning"], port)  # fmt: skip
    argv = [sys.executable, "-c", LAUNCHER, str(PROBE_FILE), *serve[serve.index("serve") :]]
    log = workdir / f"{name}.log"
    url = f"http://127.0.0.1:{port}"
    process = launch(argv, log, child_env(shim, args.threads), workdir)
    try:
        wait_healthy(process, url, name=name, log=log)
        check_origin(log.read_text(), tree, f"server {name}")
        yield url
    finally:
        stop(process, grace=30.0)  # whatever it started (a worker process) goes with it


# -- /metrics ----------------------------------------------------------------------------------------


@dataclass
class Histogram:
    buckets: list[tuple[float, float]]  # (upper bound, cumulative count), increasing
    sum: float
    count: float

    @classmethod
    def read(cls, text: str, name: str, **match: str) -> Histogram | None:
        """The series ``name`` of an exposition, summed over the label sets that carry ``match`` (None: absent)."""
        series = histogram(text, name, **match)
        return None if series is None else cls(list(series.buckets.items()), series.sum, series.count)

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


def delta(result: dict, name: str, **match: str) -> Histogram | None:
    """The series ``name`` over a window: its scrape after minus its scrape before."""
    after = Histogram.read(result["after"], name, **match)
    return None if after is None else after.minus(Histogram.read(result["before"], name, **match))


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
        before = await asyncio.to_thread(exposition, url)
        stop = asyncio.Event()
        poller = asyncio.ensure_future(poll_health(probe, url, poll, stop))
        start = time.perf_counter()
        try:
            await work(load)
        finally:
            seconds = time.perf_counter() - start
            stop.set()
            health = await poller
        after = await asyncio.to_thread(exposition, url)
    return {"before": before, "after": after, "health": health, "seconds": seconds}


def at_once(url: str, texts: list[str], tokens: int):
    async def work(session: aiohttp.ClientSession) -> None:
        await asyncio.gather(*(generate(session, url, text, tokens) for text in texts))

    return work


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
    if Histogram.read(result["after"], ROUNDTRIP) is None:
        return out | {"ipc_note": f"no {ROUNDTRIP} in /metrics: IPC read as the step overhead ({STEP} - {FORWARD})"}
    roundtrip, compute = delta(result, ROUNDTRIP, method="decode"), forward  # labelled by method, or not at all
    if roundtrip is None:
        roundtrip, compute = delta(result, ROUNDTRIP), delta(result, FORWARD)
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
    check_origin(done.stdout, tree, "router-overhead")
    return {"overhead_tokens_per_s": float(tokens.group(1).replace(",", "")),
            "overhead_lone_gap_us": float(gap.group(1)) if gap else None}  # fmt: skip
