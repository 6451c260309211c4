"""The OpenAI-compatible routes: `/v1/chat/completions`, `/v1/completions`, `/chat_tokenize`.

Each request is mapped onto TGI's `GenerateParameters` (as TGI does:
temperature 0 means greedy, anything else samples) and validated by the same
rules as `/generate`. Streams end with `data: [DONE]`, with one deliberate
exception for chat: a request whose `model` is `"tgi"`, TGI's placeholder
model name that the text-generation 0.7.0 client always sends, gets no
`[DONE]`, because that client parses every `data:` line as JSON and crashes
on it. The OpenAI and huggingface_hub clients end cleanly either way (they
also stop at the end of the body), so nothing else changes for them.

OpenAI's `n` (TGI 3.x ignores it) runs n copies of the validated request
side by side, as best_of does; on /v1/completions prompt p's choice j has
index p * n + j. A request without `max_tokens` runs until EOS, up to
`max_total_tokens` (TGI 3.x).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .answers import Run, complete_answer, stream_answer, stream_headers
from .auth import authenticate
from .errors import ApiError, json_response, validation_error
from .inference import summed_headers
from .intake import Intake, parse, read_json, server, take
from .openai_format import DONE, OpenAIFormatter
from .schemas import ChatMessage, ChatRequest, CompletionRequest, GenerateParameters, Grammar, OpenAIRequest
from .state import ServerState
from .structured import response_format_grammar
from .tool_answers import start_tool_stream, tool_call_completion
from .tools import ToolUse, chat_grammar, next_tool_call_id, tool_calls_text, tool_use
from .validation import ValidRequest, choice_copies, choices_count, validate

TGI_CLIENT_MODEL = "tgi"


def _parameters(
    body: OpenAIRequest, max_tokens: int | None, top_n_tokens: int | None = None, grammar: Grammar | None = None
) -> GenerateParameters:
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


def served_model(body: ChatRequest, state: ServerState) -> str:
    """The chat answer's `model`, as TGI 3.x's server.rs `chat_completions`: the request's, unless it sent none
    or TGI's placeholder "tgi" (completions always name the served model, as TGI's)."""
    return body.model if body.model not in (None, TGI_CLIENT_MODEL) else state.settings.model_id


async def _chat(request: Request, body: ChatRequest, intake: Intake, structured: bool) -> Response:
    """The chat answer; a model that answers `no_tool` is asked again, unstructured (TGI's way)."""
    state = server(request)
    n = choices_count(body.n, state.settings)
    valid, tools = validate_chat(body, state, structured)
    if tools is not None and n > 1:
        raise validation_error("`n` > 1 is not supported with `tools`")
    formatter = OpenAIFormatter(served_model(body, state), state.settings.system_fingerprint, state.tokenizer,
                                bool(body.logprobs))  # fmt: skip
    call_id = next_tool_call_id(body)
    copies = choice_copies(valid, n)
    if not body.stream:
        sequences = [group[0] for group in await complete_answer(request, copies, intake)]
        payload = formatter.chat_completion(sequences, valid.input_length)
        if tools is not None:
            payload = tool_call_completion(payload, sequences[0], call_id)
            if payload is None:
                return await _chat(request, body, intake, structured=False)
        return _json(state, intake, [(valid, sequences)], payload)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    send_done = body.model != TGI_CLIENT_MODEL
    admitted = await state.inference.start_admitted(intake.caller, copies, intake.tier, intake.targets)
    runs = [
        Run(generation, pipeline, lambda batch, index=index: formatter.chat_chunks(batch, index))
        for index, (generation, pipeline) in enumerate(admitted.started)
    ]
    finish = None
    if tools is not None:
        tool_stream = await start_tool_stream(request, admitted, formatter, call_id)
        if tool_stream is None:
            return await _chat(request, body, intake, structured=False)
        runs, finish = [tool_stream.run], tool_stream.chunks.finish

    def tail() -> bytes:
        generated = sum(run.pipeline.count for run in runs)
        cached = runs[0].generation.cached_tokens
        usage = formatter.usage_chunk("chat.completion.chunk", valid.input_length, generated, cached)
        last = finish(runs[0].pipeline.finish_reason) if finish is not None else b""
        return last + (usage if include_usage else b"") + (DONE if send_done else b"")

    return stream_answer(
        request, runs, admitted, stream_headers(intake, len(valid.inputs), state.settings.compute_type),
        lambda: _record(state, intake, [(valid, runs)]), tail,
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
    n = choices_count(body.n, state.settings)
    parameters = _parameters(body, body.max_tokens, grammar=response_format_grammar(body.response_format))
    valids = [
        validate(prompt, parameters, state.tokenizer, state.settings, presence_penalty=body.presence_penalty,
                 logit_bias=body.logit_bias)
        for prompt in prompts
    ]  # fmt: skip
    copies = [copy for valid in valids for copy in choice_copies(valid, n)]  # choice index: prompt * n + choice
    formatter = OpenAIFormatter(state.settings.model_id, state.settings.system_fingerprint, state.tokenizer)
    prompt_tokens = sum(valid.input_length for valid in valids)
    if not body.stream:
        sequences = [group[0] for group in await complete_answer(request, copies, intake)]
        per_prompt = [(valid, sequences[i * n : (i + 1) * n]) for i, valid in enumerate(valids)]
        cached = sum(choices[0].generation.cached_tokens for _, choices in per_prompt)
        return _json(state, intake, per_prompt, formatter.completion(sequences, prompt_tokens, cached))
    admitted = await state.inference.start_admitted(intake.caller, copies, intake.tier, intake.targets)
    runs = [
        Run(generation, pipeline,
            lambda batch, index=index, generation=generation: formatter.completion_chunks(
                index, copies[index].input_length, batch, generation.cached_tokens))
        for index, (generation, pipeline) in enumerate(admitted.started)
    ]  # fmt: skip
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def tail() -> bytes:
        completion_tokens = sum(run.pipeline.count for run in runs)
        cached = sum(runs[i * n].generation.cached_tokens for i in range(len(valids)))
        usage = formatter.usage_chunk("text_completion", prompt_tokens, completion_tokens, cached)
        return (usage if include_usage else b"") + DONE

    per_prompt = [(valid, runs[i * n : (i + 1) * n]) for i, valid in enumerate(valids)]
    return stream_answer(
        request, runs, admitted, stream_headers(intake, sum(len(p) for p in prompts), state.settings.compute_type),
        lambda: _record(state, intake, per_prompt), tail,
    )  # fmt: skip


def _record(state: ServerState, intake: Intake, per_prompt: list[tuple[ValidRequest, list]]) -> dict[str, str]:
    """Count each prompt as a finished request (its choices' tokens together); their headers summed, as TGI's
    completions sums its prompts'. Each entry's choices are `Sequence`s or streamed `Run`s."""
    parts = [
        state.inference.record_success(intake.started, valid, choices[0].generation,
                                       sum(choice.pipeline.count for choice in choices))
        for valid, choices in per_prompt
    ]  # fmt: skip
    return summed_headers(parts)


def _json(state: ServerState, intake: Intake, per_prompt: list[tuple[ValidRequest, list]], body: dict) -> Response:
    headers = _record(state, intake, per_prompt)
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
