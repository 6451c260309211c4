"""Routes that describe the server rather than generate: health, info, metrics, API docs."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from .errors import HEALTHCHECK, ApiError, json_response
from .intake import server
from .metrics import CONTENT_TYPE
from .openapi import SWAGGER_PAGE, openapi_document
from .replicas import ReplicaSet


async def health(request: Request) -> Response:
    """200 (empty) while the engine loop runs and takes requests; 503 `healthcheck` otherwise."""
    engine = server(request).engine
    if engine.running and engine.accepting:
        return Response(status_code=200)
    raise ApiError(503, "unhealthy", HEALTHCHECK)


async def info(request: Request) -> Response:
    """TGI's fields; with several replicas, also how many there are and how many serve now."""
    state = server(request)
    body = state.settings.info()
    if isinstance(state.engine, ReplicaSet):
        body.update(state.engine.describe())
    return json_response(body)


async def metrics(request: Request) -> Response:
    state = server(request)
    return Response(state.metrics.render(state.engine.scheduler.stats()), media_type=CONTENT_TYPE)


async def openapi(request: Request) -> Response:
    state = server(request)
    if state.openapi is None:
        state.openapi = openapi_document()
    return json_response(state.openapi)


async def docs(request: Request) -> Response:
    return HTMLResponse(SWAGGER_PAGE)
