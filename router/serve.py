"""`niyama serve`: load the model, size the KV cache, build the scheduler, serve TGI's API.

Start-up, in order: the tier file (fail fast on a bad one), the model, the KV
cache (`--max-batch-total-tokens` tokens, or a share of free memory), the
latency predictor (`--latency-profile`, else a cached start-up profile of this
model on this device), the scheduler and engine, then uvicorn. SIGTERM or
SIGINT stops taking connections and starts the engine's drain at once:
running requests get `--grace-period` seconds, the rest end with an in-stream
error, and the process exits 0. With `--replicas N` (or `--ray-address`) the
models run in Ray actors behind a front router instead (`replica_serve.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator

import uvicorn

from niyama.qos.config import resolve_tier_config
from niyama.qos.errors import ProfileError, QosConfigError
from niyama.qos.kv_blocks import BlockAllocator
from niyama.qos.policy import CHUNK_SIZES, POLICIES
from niyama.qos.routing import ROUTING_POLICIES
from niyama.qos.scheduler import make_scheduler
from niyama.worker.kv_cache import size_cache
from niyama.worker.loading import DTYPES, ModelLoadError, load_model
from niyama.worker.runner import ModelRunner

from .app import create_app
from .engine_core import EngineCore
from .faults import FaultyWorker
from .limits import server_options
from .profiles import startup_predictor
from .settings import ServerSettings
from .tokenizer import TextTokenizer

log = logging.getLogger("niyama.serve")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="niyama serve", description=__doc__.splitlines()[0])
    p.add_argument("--model-id", default=None, help="local folder, cached hub id or .gguf (default: embedded SmolLM2)")
    p.add_argument("--hostname", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (TGI's default is 80; we use unprivileged 8080)")
    p.add_argument("--qos-config", default="default", help="tier file (TOML), or a built-in set: default, paper")
    p.add_argument("--policy", default="niyama", choices=sorted(POLICIES), help="scheduling policy")
    p.add_argument(
        "--latency-profile",
        default=None,
        help="profile JSON or reference model name (default: profile this device once, cached)",
    )
    p.add_argument("--max-concurrent-requests", type=int, default=128)
    p.add_argument("--max-input-tokens", type=int, default=None, help="default: max total tokens - 1")
    p.add_argument("--max-total-tokens", type=int, default=None, help="default: the model's context, within the cache")
    p.add_argument("--max-batch-prefill-tokens", type=int, default=None, help="largest prefill per step (tokens)")
    p.add_argument(
        "--max-batch-total-tokens",
        type=int,
        default=None,
        help="KV cache size in tokens (default: sized from free memory)",
    )
    p.add_argument("--max-best-of", type=int, default=2)
    p.add_argument("--max-stop-sequences", type=int, default=4)
    p.add_argument("--max-top-n-tokens", type=int, default=5)
    p.add_argument("--max-client-batch-size", type=int, default=4, help="prompts per /v1/completions request")
    p.add_argument("--api-key", default=None, help="require `Authorization: Bearer <key>` on generation routes")
    p.add_argument("--max-concurrent-requests-per-key", type=int, default=None, help="per API key (429 beyond)")
    p.add_argument("--payload-limit", type=int, default=2_000_000, help="largest request body in bytes (413 beyond)")
    p.add_argument("--max-header-bytes", type=int, default=32_768, help="largest request head in bytes (431 beyond)")
    p.add_argument("--stream-send-timeout", type=float, default=30.0, help="seconds a non-reading client is kept")
    p.add_argument("--inject-step-failures", type=float, default=0.0, metavar="RATE", help="testing: fail steps")
    p.add_argument("--inject-seed", type=int, default=None, help="seed of --inject-step-failures")
    p.add_argument("--dtype", default="auto", choices=["auto", *DTYPES])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--grace-period", type=float, default=30.0, help="seconds running requests get at shutdown")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--replicas", type=int, default=1, help="model replicas, each with its own scheduler (on Ray)")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (default with --replicas: a local one)")
    p.add_argument("--routing", default="slack", choices=sorted(ROUTING_POLICIES), help="across replicas")
    p.add_argument("--gpus-per-replica", type=int, default=1, help="spread one replica over this many GPUs of a host")
    return p  # fmt: skip


class _Server(uvicorn.Server):
    """uvicorn, plus: the first SIGTERM/SIGINT also starts the engine's drain."""

    def __init__(self, config: uvicorn.Config, begin_shutdown) -> None:
        super().__init__(config)
        self._begin_shutdown = begin_shutdown
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's, except that the signal is not raised again afterwards: a drained shutdown exits 0."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig, frame) -> None:
        if not self.should_exit and self._loop is not None:
            log.info("signal %s: no new requests; running ones get the grace period", sig)
            self._loop.call_soon_threadsafe(self._begin_shutdown)
        super().handle_exit(sig, frame)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.replicas > 1 or args.ray_address:
        from .replica_serve import serve_replicas  # imports ray, which only this mode needs

        return serve_replicas(args)
    started = time.monotonic()
    try:
        tiers = resolve_tier_config(args.qos_config)
        loaded = load_model(args.model_id, device=args.device, dtype=args.dtype, gpus=args.gpus_per_replica)
    except (QosConfigError, ModelLoadError) as error:
        print(f"niyama serve: {error}", file=sys.stderr)
        return 2
    spec = size_cache(
        loaded.model.config, loaded.dtype, loaded.device, kv_cache_tokens=args.max_batch_total_tokens,
        layer_devices=loaded.layer_devices,
    )  # fmt: skip
    try:
        settings = server_settings(args, loaded.model_id, loaded.max_context, spec.capacity_tokens, loaded.device.type)
        predictor = startup_predictor(args.latency_profile, loaded)
        worker = ModelRunner(loaded, spec)
        if args.inject_step_failures:
            worker = FaultyWorker(worker, args.inject_step_failures, args.inject_seed)
            log.warning("fault injection: %.1f%% of steps will fail on purpose", 100 * args.inject_step_failures)
    except (ValueError, ProfileError) as error:
        print(f"niyama serve: {error}", file=sys.stderr)
        return 2
    scheduler = make_scheduler(
        args.policy, tiers, BlockAllocator(spec.num_blocks, spec.block_size), predictor, **scheduler_options(args)
    )
    core = EngineCore(scheduler, worker, loaded.eos_token_ids, time.monotonic)
    app = create_app(core, TextTokenizer(loaded.tokenizer), tiers, settings, shutdown_grace_seconds=args.grace_period)
    return run_app(app, args, settings, started, (
        f"model: {loaded.model_id} ({loaded.dtype}, {loaded.path})",
        f"device: {loaded.device}; KV cache: {spec.capacity_tokens} tokens ({spec.num_blocks} blocks of "
        f"{spec.block_size}); max input/total tokens: {settings.max_input_tokens}/{settings.max_total_tokens}",
        f"QoS: policy {args.policy}, tiers {', '.join(tiers.names)} (default {tiers.default}; {tiers.source}); "
        f"latency model: {predictor.name}",
    ))  # fmt: skip


def server_settings(
    args: argparse.Namespace, model_id: str, max_context: int, cache_tokens: int, compute_type: str
) -> ServerSettings:
    """The HTTP layer's limits from the flags and the served model (ValueError when they contradict)."""
    max_total = args.max_total_tokens or min(max_context, cache_tokens)
    max_input = args.max_input_tokens or max_total - 1
    settings = ServerSettings(
        model_id=model_id, max_input_tokens=max_input, max_total_tokens=max_total,
        max_concurrent_requests=args.max_concurrent_requests, max_best_of=args.max_best_of,
        max_stop_sequences=args.max_stop_sequences, max_top_n_tokens=args.max_top_n_tokens,
        max_client_batch_size=args.max_client_batch_size, api_key=args.api_key, compute_type=compute_type,
        payload_limit=args.payload_limit, max_header_bytes=args.max_header_bytes,
        max_concurrent_requests_per_key=args.max_concurrent_requests_per_key,
        stream_send_timeout=args.stream_send_timeout,
    )  # fmt: skip
    if max_total > max_context:
        raise ValueError(f"--max-total-tokens {max_total} exceeds the model's context ({max_context})")
    return settings


def scheduler_options(args: argparse.Namespace) -> dict[str, object]:
    """PolicyConfig options from the flags: `--max-batch-prefill-tokens` caps every step."""
    if not args.max_batch_prefill_tokens:
        return {}
    budget = args.max_batch_prefill_tokens
    return {"token_budget": budget, "chunk_sizes": tuple(s for s in CHUNK_SIZES if s <= budget) or (budget,)}


def run_app(app, args: argparse.Namespace, settings: ServerSettings, started: float, lines: tuple[str, ...]) -> int:
    """Log what is served, then serve ``app`` until SIGTERM/SIGINT (0 after a drained shutdown)."""
    for line in lines:
        log.info(line)
    log.info("ready in %.1f s: http://%s:%s (API: /docs)", time.monotonic() - started, args.hostname, args.port)
    config = uvicorn.Config(app, host=args.hostname, port=args.port, log_level=args.log_level,
                            timeout_graceful_shutdown=args.grace_period + 5, **server_options(settings))  # fmt: skip
    server = _Server(config, app.state.begin_shutdown)
    server.run()
    return 0 if server.started else 1
