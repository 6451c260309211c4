"""`niyama serve`: start the model's workers, build their schedulers, serve TGI's API.

Start-up, in order: the tier file and scheduling options (fail fast on bad
ones), the workers (each in its own process: a child process of this one, or
with `--replicas N` / `--ray-address` Ray actors placed by
`replica_serve.py`), each replica's latency predictor (`--latency-profile`,
else the worker's cached start-up profile of its model and device) and
scheduler, the tokenizer, then uvicorn. With `--emulate` the worker is an
emulated device (`worker/emulated.py`): no model, each step sleeps the time
the latency model (times `--truth-bias` and `--truth-noise`) gives it, and
tokens are filler text of the served tokenizer. This process never runs a forward
pass: its event loop only plans steps, streams tokens and answers HTTP, so
/health and streaming stay responsive during long steps, and a worker that
dies is replaced while the server stays up. SIGTERM or SIGINT stops taking
connections and starts the engine's drain at once: running requests get
`--grace-period` seconds, the rest end with an in-stream error, the workers
stop, and the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from niyama.engine.launch import LocalWorkers, ReplicaRecipe, launch_all
from niyama.engine.protocol import DTYPES, Emulation, WorkerConfig, WorkerStartError
from niyama.engine.replicas import ReplicaParts, ReplicaSet
from niyama.qos.errors import ProfileError, QosConfigError, TraceError
from niyama.qos.options import RunConfig, TruthConfig, add_run_options, run_config
from niyama.qos.predictor import LatencyPredictor
from niyama.qos.routing import make_routing
from niyama.qos.traces import BUILTIN_TRACES, load_trace

from . import json_logs
from .app import create_app
from .launcher_flags import LaunchError, add_inapplicable, apply_environment, check_hostname, value_of
from .limits import server_options
from .settings import ServerSettings
from .tokenizer import load_text_tokenizer
from .vertex import VertexRoutes

log = logging.getLogger("niyama.serve")

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="niyama serve", description=__doc__.splitlines()[0])
    p.add_argument("--model-id", default=None, help="local folder, hub id (downloaded unless HF_HUB_OFFLINE=1) or "
                   ".gguf (default: embedded SmolLM2)")
    p.add_argument("--revision", default=None, help="of a hub model: a branch, tag or commit (default main)")
    p.add_argument("--trust-remote-code", action="store_true", help="run the hub model's own modelling code")
    p.add_argument("--huggingface-hub-cache", metavar="PATH", help="the Hugging Face cache (default: HF_HUB_CACHE)")
    p.add_argument("--hostname", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (TGI's default is 80; we use unprivileged 8080; "
                   "AIP_HTTP_PORT wins, as on Vertex AI)")
    p.add_argument("--cors-allow-origin", action="append", metavar="ORIGIN[,ORIGIN]",
                   help="origins a browser may call from (repeat, or a comma list; default: any, as TGI)")
    p.add_argument("--json-output", action="store_true", help="log one JSON object per line (TGI's fields)")
    p.add_argument("--watermark-gamma", type=float, help="share of the vocabulary in a watermark green list (0.5)")
    p.add_argument("--watermark-delta", type=float, help="added to the green tokens' logits by the watermark (2.0)")
    p.add_argument("--max-concurrent-requests", type=int, default=128)
    p.add_argument("--max-input-tokens", "--max-input-length", type=int, default=None,
                   help="default: max total tokens - 1")
    p.add_argument("--max-total-tokens", type=int, default=None, help="default: the model's context, within the cache")
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
    p.add_argument("--grace-period", "--graceful-termination-timeout", type=float, default=30.0,
                   help="seconds running requests get at shutdown")
    p.add_argument("--log-level", type=_log_level, default="info", choices=["debug", "info", "warning", "error"],
                   help="also TGI's warn and trace")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (default with --replicas: a local one)")
    p.add_argument("--gpus-per-replica", type=int, default=1, help="spread one replica over this many GPUs of a host")
    emulate = p.add_argument_group("emulated device (docs/serving.md): the real server, a worker with no model")
    emulate.add_argument("--emulate", metavar="NAME|PROFILE.json", help="emulate this device: a reference latency "
                         "model (a100-llama3-8b) or a `niyama profile` JSON; each step sleeps its time, tokens are "
                         "filler text; KV cache 400000 tokens unless --kv-tokens")
    emulate.add_argument("--emulate-outputs", metavar="TRACE", help="requests without ignore_eos end at an output "
                         f"length drawn from this trace ({'|'.join(BUILTIN_TRACES)}|PATH.csv; default azure-conv)")
    emulate.add_argument("--emulate-seed", type=int, metavar="N",
                         help="seed of the step-time noise and the output-length draws (default 0)")
    add_run_options(p, command="serve")
    add_inapplicable(p)
    return p  # fmt: skip


def arguments(argv: list[str], environ: Mapping[str, str]) -> argparse.Namespace:
    """The flags, each defaulting to its TGI variable in ``environ`` (LaunchError, one line, for a bad one)."""
    p = parser()
    apply_environment(p, environ)
    args = p.parse_args(argv)
    if environ.get("AIP_HTTP_PORT"):
        args.port = value_of(environ, "AIP_HTTP_PORT", int)
    check_hostname(args.hostname)
    return args


def _log_level(text: str) -> str:
    """TGI's level names too (`LOG_LEVEL=warn`)."""
    return {"warn": "warning", "trace": "debug"}.get(text.lower(), text.lower())


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
    try:
        args = arguments(argv, os.environ)
        vertex_routes = VertexRoutes.from_environment(os.environ)
    except (LaunchError, ValueError) as error:
        print(f"niyama serve: {error}", file=sys.stderr)
        return 2
    log_config = json_logs.configure(args.log_level, args.json_output)
    for name, value in (("HF_HUB_CACHE", args.huggingface_hub_cache), ("WATERMARK_GAMMA", args.watermark_gamma),
                        ("WATERMARK_DELTA", args.watermark_delta)):
        if value is not None:
            os.environ[name] = str(value)  # read by the workers, which inherit it (as TGI's shards)
    started = time.monotonic()
    try:
        config = run_config(args, command="serve", max_concurrent_requests=args.max_concurrent_requests)
        tiers = config.tier_config()
        emulation = emulation_of(args, config)
        # The predictor starts from the nominal model: the one given, else the emulated device's own.
        latency_model = config.latency_model or (emulation and emulation.latency_model)
        if latency_model is not None:
            LatencyPredictor.load(latency_model)  # fail fast, before any worker starts
        recipe = ReplicaRecipe(tiers, config.policy, latency_model, args.inject_step_failures, args.inject_seed)
        workers = worker_launcher(args, config, recipe, emulation)
        parts = asyncio.run(launch_all(workers.launch, config.replicas))
    except (QosConfigError, ProfileError, TraceError, WorkerStartError, ValueError) as error:
        print(f"niyama serve: {error}", file=sys.stderr)
        return 2
    infos = [p.info for p in parts]
    try:
        tokenizer = load_text_tokenizer(infos[0].path, args.trust_remote_code)
        settings = server_settings(
            args, infos[0].model_id, min(i.max_context for i in infos), min(i.capacity_tokens for i in infos),
            infos[0].device,
        )  # fmt: skip
    except (ValueError, OSError) as error:
        stop_all(parts)
        print(f"niyama serve: {error}", file=sys.stderr)
        return 2
    if args.inject_step_failures:
        log.warning("fault injection: %.1f%% of steps will fail on purpose", 100 * args.inject_step_failures)
    engine = ReplicaSet(parts, workers.launch, make_routing(config.routing))
    emulated = emulation and emulation.describe(infos[0].device_name, min(i.capacity_tokens for i in infos))
    app = create_app(
        engine, tokenizer, tiers, settings, shutdown_grace_seconds=args.grace_period, run_config=config.as_dict(),
        emulated=emulated, cors_allow_origin=cors_origins(args.cors_allow_origin), vertex_routes=vertex_routes,
    )  # fmt: skip
    lines = [f"model: {infos[0].model_id} ({infos[0].dtype}, {infos[0].path})"]
    if emulation is not None:
        lines.insert(0, f"EMULATED device {emulation.latency_model}: no model runs; each step sleeps its latency "
                        f"model's time (truth noise {emulation.truth.noise}, bias {emulation.truth.bias}); outputs "
                        f"end at lengths drawn from {emulation.outputs} (seed {emulation.seed})")  # fmt: skip
    lines += [
        f"replica {i}: {p.where}; KV cache {p.info.capacity_tokens} tokens ({p.info.num_blocks} blocks of "
        f"{p.info.block_size}); latency model: {p.scheduler.predictor.name}"
        for i, p in enumerate(parts)
    ]
    lines.append(f"max input/total tokens: {settings.max_input_tokens}/{settings.max_total_tokens}")
    lines.append(f"QoS: policy {config.policy.name}, tiers {', '.join(tiers.names)} (default {tiers.default}; "
                 f"{tiers.source}); routing {config.routing}")  # fmt: skip
    return run_app(app, args, settings, started, tuple(lines), log_config)


def emulation_of(args: argparse.Namespace, config: RunConfig) -> Emulation | None:
    """The emulated device `--emulate` asks for; its options without it are refused (QosConfigError)."""
    if args.emulate is None:
        extras = {"--emulate-outputs": args.emulate_outputs, "--emulate-seed": args.emulate_seed,
                  "--truth-noise/--truth-bias": None if config.truth == TruthConfig() else config.truth}
        given = [flag for flag, value in extras.items() if value is not None]
        if given:
            raise QosConfigError(f"{', '.join(given)}: only for an emulated device; give --emulate NAME|PROFILE.json")
        return None
    emulation = Emulation(args.emulate, config.truth, args.emulate_outputs or "azure-conv", args.emulate_seed or 0)
    emulation.truth_model()  # fail fast on a bad name or profile...
    load_trace(emulation.outputs)  # ...or trace
    return emulation


def worker_launcher(
    args: argparse.Namespace, config: RunConfig, recipe: ReplicaRecipe, emulation: Emulation | None = None
):
    """Child processes of this one, or Ray actors with `--replicas N` / `--ray-address`."""
    worker = WorkerConfig(
        args.model_id, args.device, args.dtype, config.cache.kv_tokens, config.cache.block_size, None,
        args.gpus_per_replica, emulation, args.revision, args.trust_remote_code,
    )  # fmt: skip
    if config.replicas > 1 or args.ray_address:
        from .replica_serve import ray_workers  # imports ray, which only this mode needs

        return ray_workers(args, config.replicas, worker, recipe)
    return LocalWorkers(worker, recipe)


def stop_all(parts: list[ReplicaParts]) -> None:
    for part in parts:
        part.stop()


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
    if max_total > cache_tokens:  # TGI: `max_total_tokens` must be <= `max_batch_total_tokens`
        raise ValueError(f"--max-total-tokens {max_total} exceeds the KV cache ({cache_tokens} tokens): "
                         "a request without a max (which may run to max total tokens) could never be admitted")
    return settings


def cors_origins(given: list[str] | None) -> list[str] | None:
    """--cors-allow-origin's origins, each flag a comma list."""
    return [origin.strip() for item in given or () for origin in item.split(",") if origin.strip()] or None


def run_app(
    app, args: argparse.Namespace, settings: ServerSettings, started: float, lines: tuple[str, ...],
    log_config: dict | None = LOGGING_CONFIG,
) -> int:
    """Log what is served, then serve ``app`` until SIGTERM/SIGINT (0 after a drained shutdown)."""
    for line in lines:
        log.info(line)
    log.info("ready in %.1f s: http://%s:%s (API: /docs)", time.monotonic() - started, args.hostname, args.port)
    config = uvicorn.Config(app, host=args.hostname, port=args.port, log_level=args.log_level, log_config=log_config,
                            timeout_graceful_shutdown=args.grace_period + 5, **server_options(settings))  # fmt: skip
    server = _Server(config, app.state.begin_shutdown)
    server.run()
    return 0 if server.started else 1
