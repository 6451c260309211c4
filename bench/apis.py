"""The two wire protocols the bench speaks: what to POST, and what each streamed event means.

Everything protocol-specific is here; the client, the timing and the SLO
accounting are shared, so both APIs are measured by one code path.

- ``tgi``: ``POST /generate_stream``; one event per token
  (``{"token": ...}``), the last carries ``details.generated_tokens``; an
  ``{"error": ...}`` event ends a failed stream; no ``[DONE]``.
- ``openai``: ``POST /v1/completions`` with ``stream: true`` and
  ``stream_options.include_usage``; one chunk per token (a chunk with empty
  text that only carries the finish reason is not a token), a usage chunk,
  then ``[DONE]``.

Both ask for greedy decoding and ``ignore_eos`` (vLLM's name, also accepted
by Niyama on both routes) so outputs have the trace's lengths; servers
without it ignore the field and the results report the lengths achieved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class EventInfo:
    tokens: int = 0  # tokens this event delivers
    finish_reason: str | None = None
    error: str | None = None
    reported_tokens: int | None = None  # the server's own count of generated tokens, when it says


class Api(Protocol):
    name: str
    path: str

    def body(self, prompt: str, max_tokens: int, ignore_eos: bool, model: str | None) -> dict: ...

    def interpret(self, event: dict) -> EventInfo: ...


class TgiApi:
    name = "tgi"
    path = "/generate_stream"

    def body(self, prompt: str, max_tokens: int, ignore_eos: bool, model: str | None) -> dict:
        parameters = {"max_new_tokens": max_tokens, "do_sample": False, "details": True}
        if ignore_eos:
            parameters["ignore_eos"] = True
        return {"inputs": prompt, "parameters": parameters}

    def interpret(self, event: dict) -> EventInfo:
        if "error" in event:
            return EventInfo(error=f"{event.get('error_type') or 'error'}: {event['error']}")
        details = event.get("details") or {}
        return EventInfo(
            tokens=1 if event.get("token") is not None else 0,
            finish_reason=details.get("finish_reason"),
            reported_tokens=details.get("generated_tokens"),
        )


class OpenAIApi:
    name = "openai"
    path = "/v1/completions"

    def body(self, prompt: str, max_tokens: int, ignore_eos: bool, model: str | None) -> dict:
        body = {
            "model": model or "default",
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if ignore_eos:
            body["ignore_eos"] = True
        return body

    def interpret(self, event: dict) -> EventInfo:
        if "error" in event:
            error = event["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            return EventInfo(error=f"error: {message}")
        usage = event.get("usage") or {}
        reported = usage.get("completion_tokens")
        choices = event.get("choices") or []
        if not choices:
            return EventInfo(reported_tokens=reported)
        choice = choices[0]
        finish = choice.get("finish_reason")
        is_token = bool(choice.get("text")) or finish is None
        return EventInfo(tokens=1 if is_token else 0, finish_reason=finish, reported_tokens=reported)


APIS: dict[str, Api] = {"tgi": TgiApi(), "openai": OpenAIApi()}
