"""The one request object, from the router's validation to its last token.

A `GenerationRequest` is the scheduler's `qos.Request` (token counts, tier,
targets resolved once where the request was made) plus what the worker needs
(prompt ids, sampling parameters) and the engine's own stopping rule. The
engine gives it its id and arrival time when it is submitted; routing, the
scheduler, the worker registration and the metrics all read this same object.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from niyama.qos.plan import SampledToken
from niyama.qos.request import Request
from niyama.qos.tiers import SloTargets

from .protocol import SamplingParams


@dataclass(frozen=True, slots=True)
class GenerationRequest(Request):
    params: SamplingParams = SamplingParams()
    ignore_eos: bool = False

    @classmethod
    def of(
        cls, prompt_ids: tuple[int, ...] | list[int], params: SamplingParams, max_new_tokens: int, tier: str,
        targets: SloTargets | None = None, ignore_eos: bool = False,
    ) -> GenerationRequest:  # fmt: skip
        """A request not yet submitted (no id, no arrival: the engine sets both)."""
        prompt = tuple(prompt_ids)
        # A grammar wins over ignore_eos: once its document is complete EOS is the only token it allows.
        ignore_eos = ignore_eos and params.grammar is None
        return cls("", tier, 0.0, len(prompt), max_new_tokens, targets, prompt, params, ignore_eos)

    @property
    def constrained(self) -> bool:
        return self.params.grammar is not None

    @property
    def reuses_cache(self) -> bool:
        """Prompt logprobs need every prompt position computed, so a request that asks for them computes all."""
        return bool(self.prompt_ids) and not self.params.prompt_logprobs

    def submitted(self, request_id: str, arrival: float) -> GenerationRequest:
        return replace(self, id=request_id, arrival=arrival)

    def seeded(self, seed: int) -> GenerationRequest:
        """With a seed fixed, so the same tokens come wherever (and however often) it runs."""
        return replace(self, params=replace(self.params, seed=seed))


@dataclass(frozen=True, slots=True)
class TokenOutput:
    request_id: str
    token: SampledToken
    finish_reason: str | None  # "eos_token" or "length" on a request's last token
