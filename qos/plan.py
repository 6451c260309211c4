"""The data that crosses the scheduler/worker boundary.

Plain frozen dataclasses with no torch in them, so the same objects serve the
real worker, the simulator's virtual worker and (pickled) a Ray actor. The
scheduler only ever reasons about token *counts*; the worker holds each
request's token ids and sampling state, registered once when the request
arrives, so a plan stays small however long the prompts are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


def by_fields(self: object) -> tuple:
    """Pickle as (class, field values): half the cost of the default for slotted dataclasses, and a plan and
    its result cross a process boundary every step."""
    return type(self), tuple(getattr(self, name) for name in type(self).__slots__)


@dataclass(frozen=True, slots=True)
class Chunk:
    """Positions ``[start, start + length)`` of one request, computed in one step.

    ``sample`` is set when the chunk reaches the last known token of the
    request, so the step's logits at its last position produce the next token.
    A decode is a chunk of length 1 that samples, after the prompt is done.
    """

    __reduce__ = by_fields

    request_id: str
    start: int
    length: int
    sample: bool
    is_decode: bool = False

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(frozen=True, slots=True)
class StepShape:
    """The features the latency predictor maps to seconds.

    ``decode_context`` and ``prefill_context`` are the summed key/value
    lengths each chunk attends over (its end position), the attention cost
    that the token counts alone do not capture. ``constrained`` counts the
    sampling rows a grammar masks (each costs a token mask, worker/grammar.py).
    """

    __reduce__ = by_fields

    prefill_tokens: int = 0
    decode_tokens: int = 0
    decode_context: int = 0
    prefill_context: int = 0
    constrained: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prefill_tokens + self.decode_tokens

    @classmethod
    def of(cls, chunks: tuple[Chunk, ...] | list[Chunk]) -> StepShape:
        prefill = decode = decode_ctx = prefill_ctx = 0
        for chunk in chunks:
            if chunk.is_decode:
                decode += chunk.length
                decode_ctx += chunk.end
            else:
                prefill += chunk.length
                prefill_ctx += chunk.end
        return cls(prefill, decode, decode_ctx, prefill_ctx)


@dataclass(frozen=True, slots=True)
class Plan:
    """One step: the chunks to run as a single ragged forward pass.

    ``block_tables`` holds, for every request with a chunk, the KV block ids
    that back its positions in order (position p lives in block
    ``table[p // block_size]`` at offset ``p % block_size``). ``preempted``
    lists requests whose blocks were taken back this step; they will be
    recomputed from their first token when rescheduled.
    """

    __reduce__ = by_fields

    chunks: tuple[Chunk, ...] = ()
    block_tables: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    preempted: tuple[str, ...] = ()
    shape: StepShape = field(default_factory=StepShape)
    predicted_seconds: float = 0.0

    @property
    def is_empty(self) -> bool:
        return not self.chunks


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    __reduce__ = by_fields

    token_id: int
    logprob: float


@dataclass(frozen=True, slots=True)
class SampledToken:
    """The token a request produced in a step.

    ``prompt_logprobs`` is filled once, on a request's first sampled token,
    when its sampling parameters asked for prompt details: one entry per
    prompt token, the first ``None`` (nothing precedes it).
    """

    __reduce__ = by_fields

    request_id: str
    token_id: int
    logprob: float
    top_tokens: tuple[TokenLogprob, ...] = ()
    prompt_logprobs: tuple[float | None, ...] | None = None


@dataclass(frozen=True, slots=True)
class StepResult:
    __reduce__ = by_fields

    tokens: tuple[SampledToken, ...] = ()
    seconds: float = 0.0
