"""TGI's own routes: POST `/`, `/generate`, `/generate_stream`, `/tokenize`, `/invocations`.

`/generate` answers a `GenerateResponse`; `/` wraps it in a one-element
array (api-inference's shape) or streams when `stream` is true;
`/generate_stream` streams events and never sends `data: [DONE]` (the
text-generation client crashes on it). `return_full_text` null means false on
`/generate` and true on `/`, as in TGI for a text-generation model.

Errors known before the first byte (validation, tier, overload) are answered
with their status on every route, streams included: every client checks the
status first. Errors during generation travel inside the stream.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from . import tgi_format
from .answers import Run, complete_answer, stream_answer, stream_headers
from .auth import authenticate
from .errors import json_response
from .intake import parse, read_json, server, take
from .schemas import CompatGenerateRequest, GenerateRequest
from .validation import check_stream_parameters, validate


async def generate(request: Request) -> Response:
    return await _generate(request, GenerateRequest, default_full_text=False, as_list=False)


async def compat_generate(request: Request) -> Response:
    return await _generate(request, CompatGenerateRequest, default_full_text=True, as_list=True)


async def generate_stream(request: Request) -> Response:
    return await _generate(request, GenerateRequest, default_full_text=False, as_list=False, stream=True)


async def _generate(
    request: Request, model: type[GenerateRequest], *, default_full_text: bool, as_list: bool, stream: bool = False
) -> Response:
    state = server(request)
    body, intake = await take(request, model)
    stream = stream or getattr(body, "stream", False)
    if stream:
        check_stream_parameters(body.parameters)
    valid = validate(
        body.inputs, body.parameters, state.tokenizer, state.settings, default_return_full_text=default_full_text
    )
    if stream:
        admitted = await state.inference.start_admitted(intake.caller, [valid], intake.tier, intake.targets)
        ((generation, pipeline),) = admitted.started
        formatter = tgi_format.StreamFormatter(valid, body.parameters.details, state.tokenizer)
        run = Run(generation, pipeline, lambda batch: formatter.events(batch, pipeline, generation.seed))
        headers = stream_headers(intake, len(valid.inputs), state.settings.compute_type)
        return stream_answer(
            request, [run], admitted, headers,
            lambda: state.inference.record_success(intake.started, valid, generation, pipeline.count),
        )  # fmt: skip
    (sequences,) = await complete_answer(request, [valid], intake)
    best = sequences[0]
    headers = state.inference.record_success(intake.started, valid, best.generation, best.generated_tokens)
    headers["x-qos-tier"] = intake.tier
    response = tgi_format.generate_response(sequences, valid, state.tokenizer)
    return json_response([response] if as_list else response, headers=headers)


async def tokenize(request: Request) -> Response:
    """The input's tokens with their character offsets; `parameters.truncate` is ignored, as TGI 3.x ignores it
    here (validation.rs `prepare_input`'s `_truncate`), so this is the whole input, before any truncation."""
    state = server(request)
    authenticate(request.headers, state.settings, state.tiers)
    body = parse(GenerateRequest, await read_json(request))
    tokens = state.tokenizer.tokenize(body.inputs)
    return json_response([{"id": t.id, "text": t.text, "start": t.start, "stop": t.stop} for t in tokens])


async def invocations(request: Request) -> Response:
    """SageMaker's single route: the body's shape picks the route (chat, completion, or generate)."""
    from .openai_routes import chat_completions, completions

    data = await read_json(request)
    if isinstance(data, dict) and "messages" in data:
        return await chat_completions(request)
    if isinstance(data, dict) and "prompt" in data:
        return await completions(request)
    return await compat_generate(request)
