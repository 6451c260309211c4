"""OpenAI-shaped bodies: chat completions, text completions, their stream chunks, usage.

The content is the *visible* text: special tokens left out and, as OpenAI
documents, the stop sequence not included. `finish_reason` is TGI's for the
OpenAI routes: `stop` for EOS, `length`, or `stop_sequence`. Every chat delta
carries `"role": "assistant"` and `"tool_calls": null` (text-generation 0.7.0
requires both). With `n` > 1 every choice (and every streamed chunk) carries
its own `index`.

Completion streams are TGI 3.x's (server.rs `completions`): a chunk has no
`usage` and `finish_reason: ""` until a prompt's last token, whose chunk has
TGI's raw reason (`eos_token`, `length`, `stop_sequence`: TGI formats the
stream's reason without its `stop` spelling) and that prompt's own `usage`.
"""

from __future__ import annotations

import time

import orjson

from .inference import Sequence
from .streaming import TokenEvent, sse
from .tokenizer import TextTokenizer


def finish_reason(reason: str | None) -> str | None:
    return "stop" if reason == "eos_token" else reason


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict:
    """OpenAI's usage; `prompt_tokens_details.cached_tokens` only when the prefix cache served some (TGI has none)."""
    counts: dict = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens:
        counts["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return counts


def token_logprob(event: TokenEvent, tokenizer: TextTokenizer) -> dict:
    return {
        "token": event.text,
        "logprob": event.logprob,
        "top_logprobs": [
            {"token": tokenizer.token_text(t.token_id), "logprob": t.logprob} for t in event.output.token.top_tokens
        ],
    }


class OpenAIFormatter:
    """Bodies for one request: the fields every answer shares are fixed once."""

    def __init__(self, model: str, system_fingerprint: str, tokenizer: TextTokenizer, logprobs: bool = False) -> None:
        self.model = model
        self.system_fingerprint = system_fingerprint
        self.tokenizer = tokenizer
        self.logprobs = logprobs
        self.created = int(time.time())

    def _envelope(self, kind: str) -> dict:
        return {"id": "", "object": kind, "created": self.created, "model": self.model,
                "system_fingerprint": self.system_fingerprint}  # fmt: skip

    def _chat_choice(self, index: int, sequence: Sequence) -> dict:
        logprobs = None
        if self.logprobs:
            logprobs = {"content": [token_logprob(event, self.tokenizer) for event in sequence.events]}
        return {
            "index": index,
            "message": {"role": "assistant", "content": sequence.pipeline.visible},
            "logprobs": logprobs,
            "finish_reason": finish_reason(sequence.finish_reason),
        }

    def chat_completion(self, sequences: list[Sequence], prompt_tokens: int) -> dict:
        """One choice per sequence (`n`); usage counts the prompt once and every choice's tokens."""
        choices = [self._chat_choice(index, sequence) for index, sequence in enumerate(sequences)]
        completion_tokens = sum(sequence.generated_tokens for sequence in sequences)
        cached = sequences[0].generation.cached_tokens
        return {**self._envelope("chat.completion"), "choices": choices,
                "usage": usage(prompt_tokens, completion_tokens, cached)}  # fmt: skip

    def chat_chunks(self, batch: list[TokenEvent], index: int = 0) -> bytes:
        return b"".join(self.chat_chunk(event, index) for event in batch)

    def chat_chunk(self, event: TokenEvent, index: int = 0) -> bytes:
        choice = {
            "index": index,
            "delta": {"role": "assistant", "content": event.delta, "tool_calls": None},
            "logprobs": {"content": [token_logprob(event, self.tokenizer)]} if self.logprobs else None,
            "finish_reason": finish_reason(event.finish_reason),
        }
        return sse(orjson.dumps({**self._envelope("chat.completion.chunk"), "choices": [choice], "usage": None}))

    def delta_chunk(self, delta: dict, finish_reason: str | None = None) -> bytes:
        """A chat chunk whose one choice carries ``delta`` as is (a tool call's pieces, `tool_format`)."""
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return sse(orjson.dumps({**self._envelope("chat.completion.chunk"), "choices": [choice], "usage": None}))

    def usage_chunk(self, kind: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> bytes:
        counts = usage(prompt_tokens, completion_tokens, cached_tokens)
        return sse(orjson.dumps({**self._envelope(kind), "choices": [], "usage": counts}))

    def completion(self, sequences: list[Sequence], prompt_tokens: int, cached_tokens: int) -> dict:
        """One choice per sequence, in the order given (prompt by prompt, each prompt's `n` choices)."""
        choices = [
            {"index": index, "text": sequence.pipeline.visible, "logprobs": None,
             "finish_reason": finish_reason(sequence.finish_reason)}
            for index, sequence in enumerate(sequences)
        ]  # fmt: skip
        completion_tokens = sum(sequence.generated_tokens for sequence in sequences)
        return {**self._envelope("text_completion"), "choices": choices,
                "usage": usage(prompt_tokens, completion_tokens, cached_tokens)}  # fmt: skip

    def completion_chunks(self, index: int, prompt_tokens: int, batch: list[TokenEvent], cached_tokens: int) -> bytes:
        """TGI's chunks for choice ``index``: `finish_reason` "" until the last, which adds its own usage."""
        return b"".join(self._completion_chunk(index, prompt_tokens, event, cached_tokens) for event in batch)

    def _completion_chunk(self, index: int, prompt_tokens: int, event: TokenEvent, cached_tokens: int) -> bytes:
        choice = {"index": index, "text": event.delta, "logprobs": None, "finish_reason": event.finish_reason or ""}
        chunk = {**self._envelope("text_completion"), "choices": [choice]}
        if event.finish_reason is not None:
            chunk["usage"] = usage(prompt_tokens, event.index, cached_tokens)
        return sse(orjson.dumps(chunk))


DONE = b"data: [DONE]\n\n"
