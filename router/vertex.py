"""POST `/vertex` (and `AIP_PREDICT_ROUTE`): Google Vertex AI's prediction protocol, as TGI answers it.

Body `{"instances": [...]}`; each instance is either `{"inputs": "...",
"parameters": {...}}` or a chat request (`{"messages": [...], ...}`), tried in
that order, as TGI's untagged enum. A generate instance samples
(`do_sample` true) and takes only `max_new_tokens` and `seed` from its
parameters, as TGI's `vertex_compatibility` does; a chat instance is the chat
route's request. All instances run side by side; the answer is
`{"predictions": ["<generated text>", ...]}` in their order. Errors as TGI:
no instance is 422 `Input validation error`, and a generation that fails
fails the whole request with 500 `Incomplete generation`. Where TGI also
answers 500 for an instance that fails validation, or for overload, this
route answers what every other route does (422 with the reason, 429 with
Retry-After): the client's mistake or a busy server is not a server error,
and a client can act on it. The QoS tier comes from the `x-qos-tier` header,
as on every route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from niyama.engine.generation import GenerationError

from .answers import complete_answer
from .errors import ApiError, json_response
from .intake import server, take
from .openai_routes import validate_chat
from .schemas import Body, ChatRequest, GenerateParameters
from .state import ServerState
from .tgi_format import generated_text
from .validation import ValidRequest, validate

INPUT_VALIDATION_ERROR = "Input validation error"
INCOMPLETE_GENERATION = "Incomplete generation"
Endpoint = Callable[[Request], Awaitable[Response]]


class GenerateInstance(Body):
    inputs: str
    parameters: GenerateParameters | None = None


class VertexRequest(Body):
    instances: list[Annotated[GenerateInstance | ChatRequest, Field(union_mode="left_to_right")]]


async def vertex(request: Request) -> Response:
    state = server(request)
    body, intake = await take(request, VertexRequest)
    if not body.instances:
        raise ApiError(422, INPUT_VALIDATION_ERROR, INPUT_VALIDATION_ERROR)
    valids = [_valid(instance, state) for instance in body.instances]
    try:
        answers = await complete_answer(request, valids, intake)
    except GenerationError as error:
        raise ApiError(500, INCOMPLETE_GENERATION, INCOMPLETE_GENERATION) from error
    for valid, (best, *_) in zip(valids, answers, strict=True):
        state.inference.record_success(intake.started, valid, best.generation, best.generated_tokens)
    predictions = [generated_text(best.pipeline, valid) for valid, (best, *_) in zip(valids, answers, strict=True)]
    return json_response({"predictions": predictions}, headers={"x-qos-tier": intake.tier})


def _valid(instance: GenerateInstance | ChatRequest, state: ServerState) -> ValidRequest:
    if isinstance(instance, ChatRequest):
        return validate_chat(instance, state, True)[0]  # with its tools and response_format, as TGI's
    given = instance.parameters or GenerateParameters()
    parameters = GenerateParameters(do_sample=True, max_new_tokens=given.max_new_tokens, seed=given.seed, details=True)
    return validate(instance.inputs, parameters, state.tokenizer, state.settings)


@dataclass(frozen=True)
class VertexRoutes:
    """The paths Vertex AI gives the container (`AIP_PREDICT_ROUTE`, `AIP_HEALTH_ROUTE`), served besides ours."""

    predict: str | None = None
    health: str | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> VertexRoutes:
        """The routes ``environ`` names (ValueError, naming the variable, for one that is not a path)."""
        paths = {name: environ.get(f"AIP_{name.upper()}_ROUTE") or None for name in ("predict", "health")}
        for name, path in paths.items():
            if path is not None and not path.startswith("/"):
                raise ValueError(f"AIP_{name.upper()}_ROUTE={path}: a route must start with /")
        return cls(**paths)

    def routes(self, predict: Endpoint, health: Endpoint) -> list[Route]:
        found = [Route(self.predict, predict, methods=["POST"])] if self.predict else []
        return found + ([Route(self.health, health, methods=["GET"])] if self.health else [])
