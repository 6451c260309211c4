"""Routes that describe the server rather than generate: health, readiness, info, metrics, API docs.

Liveness and readiness are split, as TGI's users asked: `/health` (and
`/ping`) says the process and its engine are alive, and stays 200 under any
load, while draining and while a lost worker is being replaced, so an
orchestrator never restarts a busy or recovering server; `/ready` says
whether a new request would be admitted now (not shutting down, a replica
serving, below `--max-concurrent-requests`), so a load balancer sends work
elsewhere.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from .errors import HEALTHCHECK, SHUTTING_DOWN, ApiError, json_response
from .intake import server
from .metrics import CONTENT_TYPE
from .openapi import SWAGGER_PAGE, openapi_document


async def health(request: Request) -> Response:
    """Liveness: 200 (empty) while the engine runs; 503 `healthcheck` once it has stopped."""
    if server(request).engine.running:
        return Response(status_code=200)
    raise ApiError(503, "unhealthy", HEALTHCHECK)


async def ready(request: Request) -> Response:
    """Readiness: 200 (empty) when a new request would be admitted; 503 `unavailable` with the reason otherwise."""
    state = server(request)
    engine = state.engine
    if not engine.running:
        reason = "the engine is not running"
    elif not engine.accepting:
        reason = "the server is shutting down"
    elif not engine.serving:
        reason = "no replica is serving (a lost worker is being replaced)"
    elif state.inference.limit.full:
        reason = f"{state.inference.limit.in_use} of {state.inference.limit.limit} concurrent requests in flight"
    else:
        return Response(status_code=200)
    raise ApiError(503, f"not ready: {reason}", SHUTTING_DOWN)


async def info(request: Request) -> Response:
    """TGI's fields, then Niyama's: the replicas (where each worker runs), the configuration it serves with, and
    the emulated device (null on a real one)."""
    state = server(request)
    body = state.settings.info()
    body.update(state.engine.describe())
    if state.run_config is not None:
        body["niyama_config"] = state.run_config
    body["emulated"] = state.emulated
    return json_response(body)


async def metrics(request: Request) -> Response:
    state = server(request)
    return Response(state.metrics.render(state.engine.stats()), media_type=CONTENT_TYPE)


async def openapi(request: Request) -> Response:
    state = server(request)
    if state.openapi is None:
        state.openapi = openapi_document()
    return json_response(state.openapi)


async def docs(request: Request) -> Response:
    return HTMLResponse(SWAGGER_PAGE)
