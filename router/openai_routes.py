"""The OpenAI-compatible routes: `/v1/chat/completions`, `/v1/completions`, `/chat_tokenize`.

Each request is mapped onto TGI's `GenerateParameters` (as TGI does:
temperature 0 means greedy, anything else samples) and validated by the same
rules as `/generate`. Streams end with `data: [DONE]`, with one deliberate
exception for chat: a request whose `model` is `"tgi"`, TGI's placeholder
model name that the text-generation 0.7.0 client always sends, gets no
`[DONE]`, because that client parses every `data:` line as JSON and crashes
on it. The OpenAI and huggingface_hub clients end cleanly either way (they
also stop at the end of the body), so nothing else changes for them.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .answers import Run, complete_answer, stream_answer, stream_headers
from .auth import authenticate
from .errors import ApiError, json_response, validation_error
from .inference import Sequence
from .intake import Intake, parse, read_json, server, take
from .openai_format import DONE, OpenAIFormatter
from .schemas import ChatMessage, ChatRequest, CompletionRequest, GenerateParameters, Grammar, OpenAIRequest
from .state import ServerState
from .structured import response_format_grammar
from .tool_answers import start_tool_stream, tool_call_completion
from .tools import ToolUse, chat_grammar, next_tool_call_id, tool_calls_text, tool_use
from .validation import ValidRequest, validate

TGI_CLIENT_MODEL = "tgi"


def _parameters(
    body: OpenAIRequest, max_tokens: int | None, top_n_tokens: int | None = None, grammar: Grammar | None = None
) -> GenerateParameters:
    if body.n not in (None, 1):
        raise validation_error("`n` != 1 is not supported")
    greedy = body.temperature == 0.0
    return GenerateParameters(
        do_sample=not greedy,
        temperature=None if greedy else body.temperature,
        top_p=body.top_p,
        repetition_penalty=body.repetition_penalty,
        frequency_penalty=body.frequency_penalty,
        max_new_tokens=max_tokens,  # None: until EOS, up to max_total_tokens (TGI 3.x)
        stop=body.stop_sequences,
        seed=body.seed,
        details=True,
        top_n_tokens=top_n_tokens,
        ignore_eos=body.ignore_eos,
        grammar=grammar,
    )


def _message_text(message: ChatMessage) -> str:
    if message.content is None and message.tool_calls:
        return tool_calls_text(message.tool_calls)
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    parts = []
    for part in message.content:
        if part.type != "text":
            raise validation_error(f"{part.type.removesuffix('_url')} modality is not supported")
        parts.append(part.text or "")
    return "".join(parts)


def chat_prompt(body: ChatRequest, state: ServerState, tools: ToolUse | None) -> str:
    messages = [{"role": message.role, "content": _message_text(message)} for message in body.messages]
    if tools is None:
        return state.tokenizer.chat_prompt(messages)
    reads_tools = state.tokenizer.template_reads_tools
    messages[-1]["content"] += tools.appended_text(reads_tools)
    return state.tokenizer.chat_prompt(messages, tools.template_tools() if reads_tools else None)


def validate_chat(body: ChatRequest, state: ServerState, structured: bool) -> tuple[ValidRequest, ToolUse | None]:
    """The request as `/generate` would run it; ``structured`` false: without its tools and response_format."""
    tools = tool_use(body) if structured else None
    grammar = chat_grammar(body, tools) if structured else None
    prompt = chat_prompt(body, state, tools)
    top_n = body.top_logprobs if body.logprobs else None
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    parameters = _parameters(body, max_tokens, top_n, grammar)
    valid = validate(
        prompt, parameters, state.tokenizer, state.settings, add_special_tokens=False,
        presence_penalty=body.presence_penalty, logit_bias=body.logit_bias,
    )  # fmt: skip
    return valid, tools


async def chat_completions(request: Request) -> Response:
    body, intake = await take(request, ChatRequest)
    return await _chat(request, body, intake, structured=True)


async def _chat(request: Request, body: ChatRequest, intake: Intake, structured: bool) -> Response:
    """The chat answer; a model that answers `no_tool` is asked again, unstructured (TGI's way)."""
    state = server(request)
    valid, tools = validate_chat(body, state, structured)
    formatter = OpenAIFormatter(state.settings.model_id, state.settings.system_fingerprint, state.tokenizer,
                                bool(body.logprobs))  # fmt: skip
    call_id = next_tool_call_id(body)
    if not body.stream:
        (sequences,) = await complete_answer(request, [valid], intake)
        payload = formatter.chat_completion(sequences[0], valid.input_length)
        if tools is not None:
            payload = tool_call_completion(payload, sequences[0], call_id)
            if payload is None:
                return await _chat(request, body, intake, structured=False)
        return _json(state, intake, valid, sequences[0], payload)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    send_done = body.model != TGI_CLIENT_MODEL
    admitted = await state.inference.start_admitted(intake.caller, [valid], intake.tier, intake.targets)
    ((generation, pipeline),) = admitted.started
    run, finish = Run(generation, pipeline, formatter.chat_chunks), None
    if tools is not None:
        tool_stream = await start_tool_stream(request, admitted, formatter, call_id)
        if tool_stream is None:
            return await _chat(request, body, intake, structured=False)
        run, finish = tool_stream.run, tool_stream.chunks.finish

    def tail() -> bytes:
        usage = formatter.usage_chunk("chat.completion.chunk", valid.input_length, pipeline.count)
        last = finish(pipeline.finish_reason) if finish is not None else b""
        return last + (usage if include_usage else b"") + (DONE if send_done else b"")

    return stream_answer(
        request, [run], admitted,
        stream_headers(intake, len(valid.inputs), state.settings.compute_type),
        lambda: state.inference.record_success(intake.started, valid, generation, pipeline.count), tail,
    )  # fmt: skip


async def completions(request: Request) -> Response:
    state = server(request)
    body, intake = await take(request, CompletionRequest)
    if body.suffix is not None:
        raise ApiError(
            422, "Suffix is not supported and can be achieved by preprocessing the prompt.", "suffix not supported"
        )
    prompts = body.prompts
    if len(prompts) > state.settings.max_client_batch_size:
        raise ApiError(
            422,
            f"Number of prompts exceeds the maximum allowed batch size of {state.settings.max_client_batch_size}",
            "batch size exceeded",
        )
    parameters = _parameters(body, body.max_tokens, grammar=response_format_grammar(body.response_format))
    valids = [
        validate(
            prompt,
            parameters,
            state.tokenizer,
            state.settings,
            presence_penalty=body.presence_penalty,
            logit_bias=body.logit_bias,
        )
        for prompt in prompts
    ]
    formatter = OpenAIFormatter(state.settings.model_id, state.settings.system_fingerprint, state.tokenizer)
    prompt_tokens = sum(valid.input_length for valid in valids)
    if not body.stream:
        sequences = [results[0] for results in await complete_answer(request, valids, intake)]
        return _json(state, intake, valids[0], sequences[0], formatter.completion(sequences, prompt_tokens))
    admitted = await state.inference.start_admitted(intake.caller, valids, intake.tier, intake.targets)
    runs = [
        Run(generation, pipeline, lambda batch, index=index: formatter.completion_chunks(index, batch))
        for index, (generation, pipeline) in enumerate(admitted.started)
    ]
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def tail() -> bytes:
        completion_tokens = sum(run.pipeline.count for run in runs)
        usage = formatter.usage_chunk("text_completion", prompt_tokens, completion_tokens)
        return (usage if include_usage else b"") + DONE

    first = runs[0]
    return stream_answer(
        request, runs, admitted, stream_headers(intake, sum(len(p) for p in prompts), state.settings.compute_type),
        lambda: state.inference.record_success(intake.started, valids[0], first.generation, first.pipeline.count),
        tail,
    )  # fmt: skip


def _json(state: ServerState, intake: Intake, valid: ValidRequest, best: Sequence, body: dict) -> Response:
    headers = state.inference.record_success(intake.started, valid, best.generation, best.generated_tokens)
    headers["x-qos-tier"] = intake.tier
    return json_response(body, headers=headers)


async def chat_tokenize(request: Request) -> Response:
    """The chat request's prompt, as the template writes it and as the model will see it."""
    state = server(request)
    authenticate(request.headers, state.settings, state.tiers)
    body = parse(ChatRequest, await read_json(request))
    prompt = chat_prompt(body, state, tool_use(body))
    tokens = state.tokenizer.tokenize(prompt, add_special_tokens=False)
    return json_response({
        "tokenize_response": [{"id": t.id, "text": t.text, "start": t.start, "stop": t.stop} for t in tokens],
        "templated_text": prompt,
    })  # fmt: skip


async def models(request: Request) -> Response:
    model_id = server(request).settings.model_id
    return json_response(
        {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": model_id}]}
    )
