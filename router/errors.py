"""Every error the server answers, in TGI's envelope: `{"error": "...", "error_type": "..."}`.

Handlers raise `ApiError` (or let a known exception through); `install` maps
all of them, plus Starlette's own 404/405 and any bug, to a JSON answer with
`Content-Type: application/json`, because the async text-generation client
rejects anything else. Inside an SSE stream the same envelope travels as one
`data:` event (`as_event`).
"""

from __future__ import annotations

import logging

import orjson
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from niyama.engine.generation import GenerationError
from niyama.engine.replicas import EngineStopping, NoReplicaServing
from niyama.qos.errors import AdmissionError

log = logging.getLogger("niyama.router")

VALIDATION = "validation"
OVERLOADED = "overloaded"
GENERATION = "generation"
INCOMPLETE = "incomplete_generation"
HEALTHCHECK = "healthcheck"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
TEMPLATE = "template_error"
NOT_FOUND = "not_found"
SHUTTING_DOWN = "unavailable"
CLIENT_STALLED = "client_stalled"  # a stream's client read nothing for --stream-send-timeout

INPUT_VALIDATION = "Input validation error: "


class ApiError(Exception):
    """An answer other than success: status, message and TGI error type."""

    def __init__(self, status: int, message: str, error_type: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        return {"error": self.message, "error_type": self.error_type}

    def response(self) -> Response:
        return json_response(self.body(), self.status, self.headers)


class ClientDisconnected(Exception):
    """The client closed the connection before its answer was ready."""


def validation_error(message: str) -> ApiError:
    """TGI's 422: the message carries TGI's prefix."""
    return ApiError(422, INPUT_VALIDATION + message, VALIDATION)


def generation_error(message: str) -> ApiError:
    return ApiError(424, f"Request failed during generation: {message}", GENERATION)


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def describe_validation(error: ValidationError) -> str:
    """A pydantic error as one line: where in the body, and what was wrong."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def from_exception(error: BaseException) -> ApiError:
    """The envelope for an exception a route let through."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, ValidationError):
        return validation_error(describe_validation(error))
    if isinstance(error, AdmissionError):
        return validation_error(str(error))
    if isinstance(error, GenerationError):
        return generation_error(str(error))
    if isinstance(error, ClientDisconnected):
        return ApiError(499, "the client closed the connection", "client_closed")
    if isinstance(error, EngineStopping):
        return ApiError(503, "the server is shutting down and takes no new requests", SHUTTING_DOWN)
    if isinstance(error, NoReplicaServing):
        return ApiError(503, str(error), SHUTTING_DOWN)
    return ApiError(500, f"internal error: {type(error).__name__}: {error}", "internal")


def as_event(error: ApiError) -> bytes:
    """The error as an SSE event, as TGI sends it mid-stream."""
    return b"data: " + orjson.dumps(error.body()) + b"\n\n"


def install(app: Starlette) -> None:
    async def api_error(_: Request, error: Exception) -> Response:
        answer = from_exception(error)
        if answer.status == 500:
            log.error("unexpected error while answering a request", exc_info=error)
        return answer.response()

    async def http_error(_: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        kind = NOT_FOUND if error.status_code == 404 else "http"
        return ApiError(error.status_code, str(error.detail), kind, dict(error.headers or {})).response()

    app.add_exception_handler(HTTPException, http_error)
    # Expected failures are answered by the exception middleware; a bare
    # Exception (a bug) goes through the server-error middleware, which also logs it.
    for kind in (
        ApiError,
        ValidationError,
        AdmissionError,
        GenerationError,
        EngineStopping,
        NoReplicaServing,
        ClientDisconnected,
        Exception,
    ):
        app.add_exception_handler(kind, api_error)
