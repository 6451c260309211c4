"""`create_app`: the Starlette app around one engine, with every route of the TGI contract.

The app owns the engine's lifetime: its loops start with the app (inside the
running event loop) and, at shutdown, running requests get
`shutdown_grace_seconds` to finish before the rest fail with an in-stream
error; then the workers stop. `begin_shutdown` starts that drain early, when
the signal arrives, so streams end while the server still waits for its
connections. The app's `Metrics` observe the engine, and a probe measures the
event loop's lag (`niyama_event_loop_lag_seconds`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from niyama.engine.replicas import ReplicaSet
from niyama.qos.config import TierConfig

from . import errors, info_routes, openai_routes, tgi_routes, vertex
from .inference import Inference
from .limits import PayloadLimit
from .loop_lag import LoopLagProbe
from .metrics import Metrics
from .openapi import ASSETS, ASSETS_PATH
from .replica_metrics import ReplicaCollector
from .settings import ServerSettings
from .state import ServerState
from .tokenizer import TextTokenizer

Handler = Callable[[Request], Awaitable[Response]]


def counted(handler: Handler) -> Handler:
    """A generation route whose failures (before its answer starts) count in `tgi_request_failure{err}`."""

    @functools.wraps(handler)
    async def route(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as error:
            request.app.state.niyama.metrics.request_failed(errors.from_exception(error).error_type)
            raise

    return route


ROUTES = [
    Route("/", counted(tgi_routes.compat_generate), methods=["POST"]),
    Route("/generate", counted(tgi_routes.generate), methods=["POST"]),
    Route("/generate_stream", counted(tgi_routes.generate_stream), methods=["POST"]),
    Route("/tokenize", tgi_routes.tokenize, methods=["POST"]),
    Route("/invocations", tgi_routes.invocations, methods=["POST"]),
    Route("/vertex", counted(vertex.vertex), methods=["POST"]),
    Route("/v1/chat/completions", counted(openai_routes.chat_completions), methods=["POST"]),
    Route("/v1/completions", counted(openai_routes.completions), methods=["POST"]),
    Route("/chat_tokenize", openai_routes.chat_tokenize, methods=["POST"]),
    Route("/v1/models", openai_routes.models, methods=["GET"]),
    Route("/", info_routes.health, methods=["GET"]),
    Route("/health", info_routes.health, methods=["GET"]),
    Route("/ping", info_routes.health, methods=["GET"]),
    Route("/ready", info_routes.ready, methods=["GET"]),
    Route("/info", info_routes.info, methods=["GET"]),
    Route("/metrics", info_routes.metrics, methods=["GET"]),
    Route("/api-doc/openapi.json", info_routes.openapi, methods=["GET"]),
    Route("/docs", info_routes.docs, methods=["GET"]),
]
# TGI's CORS layer: these methods and headers, for the origins of --cors-allow-origin (default: any).
CORS_METHODS = ("GET", "POST")
CORS_HEADERS = ("content-type",)


def create_app(
    engine: ReplicaSet,
    tokenizer: TextTokenizer,
    tiers: TierConfig,
    settings: ServerSettings,
    *,
    shutdown_grace_seconds: float = 30.0,
    run_config: dict | None = None,
    emulated: dict | None = None,
    cors_allow_origin: list[str] | None = None,
    vertex_routes: vertex.VertexRoutes | None = None,
) -> Starlette:
    """The app around ``engine``, which it starts, observes (its metrics) and stops.

    ``emulated``: the emulated device it serves on (`niyama serve --emulate`), as /info reports it.
    ``cors_allow_origin``: the origins a browser may call from (None or empty: any, as TGI).
    ``vertex_routes``: Vertex AI's own prediction and health paths (`AIP_PREDICT_ROUTE`, `AIP_HEALTH_ROUTE`).
    """
    metrics = Metrics(tiers, settings.max_input_tokens, settings.max_total_tokens)
    engine.observer = metrics
    metrics.registry.register(ReplicaCollector(engine))
    lag = LoopLagProbe(metrics.registry)
    inference = Inference(engine, tokenizer, settings, metrics)
    state = ServerState(settings, tokenizer, tiers, engine, metrics, inference, run_config, emulated)
    draining: list[asyncio.Task] = []

    def begin_shutdown() -> None:
        """Stop taking requests now; running ones get the grace period, then fail with a clear error."""
        if not draining:
            draining.append(asyncio.get_running_loop().create_task(engine.drain(shutdown_grace_seconds)))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        engine.start()
        lag.start()
        try:
            yield
        finally:
            begin_shutdown()
            await draining[0]
            await lag.stop()
            await engine.close()

    middleware = [
        Middleware(CORSMiddleware, allow_origins=cors_allow_origin or ["*"], allow_methods=CORS_METHODS,
                   allow_headers=CORS_HEADERS),
        Middleware(PayloadLimit, limit=settings.payload_limit),
    ]  # fmt: skip
    routes = [*ROUTES, Mount(ASSETS_PATH, StaticFiles(directory=ASSETS))]  # /docs' assets
    routes += (vertex_routes or vertex.VertexRoutes()).routes(counted(vertex.vertex), info_routes.health)
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
    errors.install(app)
    app.state.niyama = state
    app.state.begin_shutdown = begin_shutdown
    return app
