"""Token choice with TGI's parameters, one independent random stream per request.

The order follows TGI's `NextTokenChooser`: `logit_bias` and the watermark on
the raw logits (`processors`), then penalties, then
the warpers (temperature, top-k, top-p, typical-p), and the reported logprob
is taken from the processed distribution. As in TGI, any warper turns
sampling on. Each sampling request owns a `torch.Generator` seeded from its
own seed, so its tokens do not depend on what else shares the step.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from niyama.engine.protocol import SamplingParams
from niyama.qos.plan import TokenLogprob

from .processors import shifts

Processor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Below this temperature a request samples its most likely token, as vLLM does: the warped scores'
# limit, where dividing by the temperature itself would overflow to inf and leave nothing to sample.
GREEDY_TEMPERATURE = 1e-5


def penalties(params: SamplingParams) -> list[Processor]:
    chain: list[Processor] = []
    if params.repetition_penalty is not None and params.repetition_penalty != 1.0:
        chain.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if params.frequency_penalty:
        chain.append(_FrequencyPenalty(params.frequency_penalty))
    if params.presence_penalty:
        chain.append(_PresencePenalty(params.presence_penalty))
    return chain


def warpers(params: SamplingParams) -> list[Processor]:
    if not params.samples:
        return []
    chain: list[Processor] = []
    if params.temperature is not None and params.temperature < GREEDY_TEMPERATURE:
        chain.append(_most_likely)
    elif params.temperature is not None and params.temperature != 1.0:
        chain.append(TemperatureLogitsWarper(params.temperature))
    if params.top_k:
        chain.append(TopKLogitsWarper(params.top_k))
    if params.top_p is not None and params.top_p < 1.0:
        chain.append(TopPLogitsWarper(params.top_p))
    if params.typical_p is not None and params.typical_p < 1.0:
        chain.append(TypicalLogitsWarper(params.typical_p))
    return chain


def _most_likely(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Temperature -> 0: all the probability on the highest score (the first of equals)."""
    return torch.full_like(scores, -torch.inf).scatter_(1, scores.argmax(dim=-1, keepdim=True), 0.0)


def _finite(scores: torch.Tensor) -> torch.Tensor:
    """Scores a user's extreme parameters overflowed (a penalty near 0...) as their limit: +inf the largest
    number, nan never chosen. Otherwise one request's numbers would make sampling raise and fail its whole step."""
    return torch.nan_to_num(scores, nan=-torch.inf, posinf=torch.finfo(scores.dtype).max)


class _FrequencyPenalty:
    """TGI's frequency penalty: subtract penalty x (share of the sequence that is this token)."""

    def __init__(self, penalty: float) -> None:
        self.penalty = penalty

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        counts = torch.zeros_like(scores).scatter_add_(1, input_ids, torch.ones_like(input_ids, dtype=scores.dtype))
        return scores - self.penalty * counts / input_ids.shape[1]


class _PresencePenalty:
    """OpenAI's presence penalty: subtract penalty once from every token already present."""

    def __init__(self, penalty: float) -> None:
        self.penalty = penalty

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        present = torch.zeros_like(scores).scatter_(1, input_ids, 1.0)
        return scores - self.penalty * present


class RequestSampler:
    """One request's processors and random stream, built once when it arrives."""

    def __init__(self, params: SamplingParams, device: torch.device) -> None:
        self.params = params
        self.processors = shifts(params, device) + penalties(params) + warpers(params)
        self.generator: torch.Generator | None = None
        if params.samples:
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(params.seed if params.seed is not None else secrets.randbits(63))

    @property
    def seed(self) -> int | None:
        return self.generator.initial_seed() if self.generator is not None else None

    def process(self, logits: torch.Tensor, history: Sequence[int]) -> torch.Tensor:
        scores = logits.unsqueeze(0)
        ids = torch.tensor([list(history)], device=logits.device)
        for processor in self.processors:
            scores = processor(ids, scores)
        return _finite(scores[0])


@dataclass(frozen=True, slots=True)
class Choice:
    token_id: int
    logprob: float
    top_tokens: tuple[TokenLogprob, ...]


def full_precision(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits in float32 for softmax and sampling; float32 and float64 as they are."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def choose(
    logits: torch.Tensor, samplers: Sequence[RequestSampler], histories: Sequence[Sequence[int]]
) -> list[Choice]:
    """One token per row of ``logits`` (rows x vocab), row i for ``samplers[i]``."""
    if not samplers:
        return []
    scores = full_precision(logits)
    processed = [i for i, sampler in enumerate(samplers) if sampler.processors]
    if processed:
        scores = scores.clone()
        for i in processed:
            scores[i] = samplers[i].process(scores[i], histories[i])
    logprobs = torch.log_softmax(scores, dim=-1)
    chosen = torch.argmax(scores, dim=-1)
    for i, sampler in enumerate(samplers):
        if sampler.generator is not None:
            chosen[i] = torch.multinomial(logprobs[i].exp(), 1, generator=sampler.generator)[0]
    chosen_logprobs = logprobs.gather(1, chosen.unsqueeze(1))[:, 0].tolist()
    top_n = max(sampler.params.top_n_tokens for sampler in samplers)
    top_values, top_ids = logprobs.topk(top_n, dim=-1) if top_n else (logprobs[:, :0], chosen[:, None][:, :0])
    choices = []
    for sampler, token, logprob, values, ids in zip(
        samplers, chosen.tolist(), chosen_logprobs, top_values.tolist(), top_ids.tolist()
    ):
        n = sampler.params.top_n_tokens
        choices.append(Choice(token, logprob, tuple(TokenLogprob(t, v) for t, v in zip(ids[:n], values[:n]))))
    return choices
