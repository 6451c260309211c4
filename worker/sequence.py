"""What the worker keeps per request: its tokens, its sampler, its prompt logprobs, its grammar's matcher."""

from __future__ import annotations

from dataclasses import dataclass

from .sampling import RequestSampler


@dataclass
class Sequence:
    request_id: str
    token_ids: list[int]  # the prompt, then every generated token
    prompt_len: int
    sampler: RequestSampler
    # Logprobs of the prompt tokens gathered so far (the first is None: nothing
    # precedes it); None when the request did not ask for them.
    prompt_logprobs: list[float | None] | None = None
    delivered_prompt_logprobs: bool = False
    # The request's grammar state (an llguidance matcher, worker/grammar.py), fed every sampled token;
    # None when unconstrained. It lives as long as the Sequence, so a preempted request keeps it.
    matcher: object | None = None

    @property
    def next_prompt_logprob(self) -> int | None:
        """The prompt position whose logprob is still missing, or None."""
        if self.prompt_logprobs is None or len(self.prompt_logprobs) >= self.prompt_len:
            return None
        return len(self.prompt_logprobs)
