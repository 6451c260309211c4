"""Chat answers to a request that offered tools, in TGI 3.x's shapes (`lib.rs`, `chat.rs`, `server.rs`).

A call is `{"id", "type": "function", "function": {"description": null,
"name", "arguments"}}` with `arguments` a JSON *string*; the message is
`{"role": "assistant", "tool_calls": [call]}` and `finish_reason` stays TGI's
(`stop` at EOS, `length`). Streamed, the first tool-call delta carries the
name and `{`, the next ones the arguments' text as it comes (name null), and a
last one the rest with the finish reason; together the pieces are the
arguments' JSON.

The model may pick `no_tool` (under `tool_choice` auto): as in TGI it is then
asked again without tools and its answer is ordinary content. For that, a
stream reads its first tokens before the answer starts, until the function's
name is known; the answer starts with the name.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from .answers import Run
from .inference import Admitted, Sequence
from .openai_format import OpenAIFormatter, finish_reason
from .streaming import STOP_SEQUENCE, TokenEvent, TokenPipeline, run_until_disconnect
from .tools import NO_TOOL, ToolCallSplitter, parse_tool_call, tool_error


def tool_call(call_id: str, name: str, arguments: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"description": None, "name": name, "arguments": arguments}}


def tool_call_completion(payload: dict, sequence: Sequence, call_id: str) -> dict | None:
    """The chat completion ``payload`` with the call as its message; None when the model chose `no_tool`."""
    call = parse_tool_call(sequence.pipeline.visible)
    if call.name == NO_TOOL:
        return None
    payload["choices"][0]["message"] = {"role": "assistant",
                                        "tool_calls": [tool_call(call_id, call.name, call.arguments)]}  # fmt: skip
    return payload


class ToolCallChunks:
    """The stream's tool-call deltas; ``first`` is the arguments' text read before the answer started."""

    def __init__(self, formatter: OpenAIFormatter, call_id: str, splitter: ToolCallSplitter, first: str) -> None:
        self.formatter = formatter
        self.call_id = call_id
        self.splitter = splitter
        self.pending: str | None = first  # sent with the name, in the first delta

    def _delta(self, arguments: str, finish: str | None = None) -> bytes:
        name = None
        if self.pending is not None:
            name, arguments, self.pending = self.splitter.name, self.pending + arguments, None
        call = {"index": 0, "id": self.call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        return self.formatter.delta_chunk({"role": "assistant", "tool_calls": [call]}, finish)

    def chunks(self, batch: list[TokenEvent]) -> bytes:
        pieces = (self.splitter.feed(event.delta) for event in batch)
        return b"".join(self._delta(piece) for piece in pieces if piece or self.pending is not None)

    def finish(self, reason: str | None) -> bytes:
        """The last delta, after the generation's last token: the held text and the finish reason."""
        return self._delta(self.splitter.finish(), finish_reason(reason))


@dataclass
class ToolStream:
    run: Run
    chunks: ToolCallChunks


async def _until_named(generation, pipeline: TokenPipeline, splitter: ToolCallSplitter) -> str:
    first = ""
    while splitter.name is None and pipeline.finish_reason is None:
        try:
            output = await anext(generation)
        except StopAsyncIteration:
            break
        first += splitter.feed(pipeline.push(output).delta)
    if pipeline.finish_reason == STOP_SEQUENCE:
        await generation.aclose(STOP_SEQUENCE)
    return first


async def start_tool_stream(
    request: Request, admitted: Admitted, formatter: OpenAIFormatter, call_id: str
) -> ToolStream | None:
    """Read the started generation up to the function's name; None (generation ended) if it is `no_tool`.

    Closes ``admitted`` unless it returns a stream to answer with.
    """
    ((generation, pipeline),) = admitted.started
    splitter = ToolCallSplitter()
    try:
        first = await run_until_disconnect(request.receive, _until_named(generation, pipeline, splitter))
        if splitter.name is None:
            raise tool_error(f"Failed to parse generated text: {splitter.text!r}")
    except BaseException:
        await admitted.close()
        raise
    if splitter.name == NO_TOOL:
        await generation.aclose(NO_TOOL)  # ended on purpose, not a cancelled request
        await admitted.close()
        return None
    chunks = ToolCallChunks(formatter, call_id, splitter, str(first))
    return ToolStream(Run(generation, pipeline, chunks.chunks), chunks)
