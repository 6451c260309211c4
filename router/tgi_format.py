"""TGI's answer bodies: `GenerateResponse`, its `details`, and the `/generate_stream` events.

Field names, order and omissions follow TGI's lib.rs: `top_tokens` and
`best_of_sequences` are left out when empty, `seed` is null for greedy
requests, a prefill's first logprob is null, and `generated_text` ends with
the stop sequence that ended it (TGI checks stop sequences against the text
it has generated, so the sequence is part of it).
"""

from __future__ import annotations

import orjson

from .inference import Sequence
from .streaming import TokenEvent, TokenPipeline, sse
from .tokenizer import TextTokenizer
from .validation import ValidRequest


def token(event: TokenEvent) -> dict:
    return {"id": event.token_id, "text": event.text, "logprob": event.logprob, "special": event.special}


def top_tokens(event: TokenEvent, tokenizer: TextTokenizer) -> list[dict]:
    return [
        {"id": t.token_id, "text": tokenizer.token_text(t.token_id), "logprob": t.logprob,
         "special": tokenizer.is_special(t.token_id)}
        for t in event.output.token.top_tokens
    ]  # fmt: skip


def prefill(sequence: Sequence, valid: ValidRequest, tokenizer: TextTokenizer) -> list[dict]:
    if not valid.decoder_input_details or not sequence.events:
        return []
    logprobs = sequence.events[0].output.token.prompt_logprobs or (None,) * valid.input_length
    return [
        {"id": token_id, "text": tokenizer.token_text(token_id), "logprob": logprob}
        for token_id, logprob in zip(valid.prompt_ids, logprobs)
    ]


def generated_text(pipeline: TokenPipeline, valid: ValidRequest) -> str:
    text = pipeline.text_with_stop()
    return valid.inputs + text if valid.return_full_text else text


def _sequence_details(sequence: Sequence, valid: ValidRequest, tokenizer: TextTokenizer) -> dict:
    details = {
        "finish_reason": sequence.finish_reason,
        "generated_tokens": sequence.generated_tokens,
        "seed": sequence.generation.seed,
        "prefill": prefill(sequence, valid, tokenizer),
        "tokens": [token(event) for event in sequence.events],
    }
    if valid.top_n_tokens:
        details["top_tokens"] = [top_tokens(event, tokenizer) for event in sequence.events]
    return details


def generate_response(sequences: list[Sequence], valid: ValidRequest, tokenizer: TextTokenizer) -> dict:
    """The body of /generate for ``sequences`` (best first; the others become `best_of_sequences`)."""
    best = sequences[0]
    response: dict = {"generated_text": generated_text(best.pipeline, valid)}
    if valid.details:
        details = _sequence_details(best, valid, tokenizer)
        if len(sequences) > 1:
            details["best_of_sequences"] = [
                {"generated_text": generated_text(other.pipeline, valid), **_sequence_details(other, valid, tokenizer)}
                for other in sequences[1:]
            ]
        response["details"] = details
    return response


class StreamFormatter:
    """`/generate_stream` events: one per token; the last one carries `generated_text` and `details`."""

    def __init__(self, valid: ValidRequest, details: bool, tokenizer: TextTokenizer) -> None:
        self.valid = valid
        self.details = details
        self.tokenizer = tokenizer

    def events(self, batch: list[TokenEvent], pipeline: TokenPipeline, seed: int | None) -> bytes:
        return b"".join(self.event(event, pipeline, seed) for event in batch)

    def event(self, event: TokenEvent, pipeline: TokenPipeline, seed: int | None) -> bytes:
        payload: dict = {"index": event.index, "token": token(event)}
        if self.valid.top_n_tokens:
            payload["top_tokens"] = top_tokens(event, self.tokenizer)
        if event.finish_reason is None:
            payload["generated_text"] = None
            payload["details"] = None
        else:
            payload["generated_text"] = generated_text(pipeline, self.valid)
            payload["details"] = (
                {"finish_reason": event.finish_reason, "generated_tokens": event.index, "seed": seed,
                 "input_length": self.valid.input_length}
                if self.details
                else None
            )  # fmt: skip
        return sse(orjson.dumps(payload))
