"""The first steps of every generation request: who calls, what the body says, which QoS tier.

Order matters and matches what a client expects: authentication (401) before
the body is read, the body's shape (422, our envelope even for a body that
is not JSON, where TGI answers text/plain), then the tier (422 unknown, 403
not allowed for this key).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from niyama.qos.tiers import SloTargets

from .auth import Caller, authenticate
from .errors import ClientDisconnected, describe_validation, validation_error
from .qos_headers import resolve_qos
from .state import ServerState

Body = TypeVar("Body", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Intake:
    started: float  # monotonic, when the route got the request
    caller: Caller
    tier: str
    targets: SloTargets | None  # the request's own, when it tightened its tier's


def server(request: Request) -> ServerState:
    return request.app.state.niyama


async def read_json(request: Request) -> object:
    try:
        raw = await request.body()
    except ClientDisconnect:  # the client left mid-body: not a server error, nothing to log
        raise ClientDisconnected from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise validation_error(f"the body is not valid JSON: {error}") from None


def parse(model: type[Body], data: object) -> Body:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise validation_error(describe_validation(error)) from None


async def take(request: Request, model: type[Body]) -> tuple[Body, Intake]:
    started = time.monotonic()
    state = server(request)
    caller = authenticate(request.headers, state.settings, state.tiers)
    body = parse(model, await read_json(request))
    state.metrics.request_received()
    tier, targets = resolve_qos(request.headers, getattr(body, "qos", None), state.tiers, caller)
    return body, Intake(started, caller, tier, targets)
