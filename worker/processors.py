"""Logit shifts applied before the penalties: OpenAI's `logit_bias` and TGI's greenlist watermark.

Both add a constant to some tokens' raw logits, so they come first in a
request's chain, as TGI's `NextTokenChooser` runs its watermark before the
repetition penalty and OpenAI/vLLM apply `logit_bias` to the model's logits.
"""

from __future__ import annotations

import os

import torch

from niyama.engine.protocol import SamplingParams

# TGI's watermark settings (server/text_generation_server/utils/watermark.py), from the same environment variables.
WATERMARK_GAMMA = float(os.getenv("WATERMARK_GAMMA", "0.5"))  # share of the vocabulary in each green list
WATERMARK_DELTA = float(os.getenv("WATERMARK_DELTA", "2.0"))  # added to the green tokens' logits
WATERMARK_HASH_KEY = 15485863  # a large prime: the green list's seed is this times the previous token


class Watermark:
    """TGI's `WatermarkLogitsProcessor` (Kirchenbauer et al., 2023): favour a green list seeded by the previous token.

    The permutation has its own generator, so watermarking leaves the
    request's sampling stream untouched. The previous token is the request's
    own last token, as in TGI's `CausalLM` (its flash batches read the last
    column of a padded tensor, which for shorter rows is padding).
    """

    def __init__(self, device: torch.device, gamma: float = WATERMARK_GAMMA, delta: float = WATERMARK_DELTA) -> None:
        self.gamma = gamma
        self.delta = delta
        self.rng = torch.Generator(device=device)

    def green_list(self, previous_token: int, vocab_size: int) -> torch.Tensor:
        self.rng.manual_seed(WATERMARK_HASH_KEY * previous_token)
        permutation = torch.randperm(vocab_size, device=self.rng.device, generator=self.rng)
        return permutation[: int(vocab_size * self.gamma)]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        green = self.green_list(int(input_ids[0, -1]), scores.shape[-1])
        shift = torch.zeros_like(scores)
        shift[:, green] = self.delta
        return scores + shift


class LogitBias:
    """OpenAI's `logit_bias`: a fixed amount added to each named token's logit (-100 bans it, +100 forces it)."""

    def __init__(self, bias: tuple[tuple[int, float], ...], device: torch.device) -> None:
        self.token_ids = torch.tensor([token for token, _ in bias], dtype=torch.long, device=device)
        self.values = torch.tensor([value for _, value in bias], dtype=torch.float64, device=device)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores.index_add(1, self.token_ids, self.values.to(scores.dtype).unsqueeze(0))


def shifts(params: SamplingParams, device: torch.device) -> list[LogitBias | Watermark]:
    """The processors that run before the penalties, for a request that asks for them."""
    chain: list[LogitBias | Watermark] = []
    if params.logit_bias:
        chain.append(LogitBias(params.logit_bias, device))
    if params.watermark:
        chain.append(Watermark(device))
    return chain
