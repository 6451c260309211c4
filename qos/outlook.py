"""How one replica would serve one more request: what the front router compares (see ``routing``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Outlook:
    """How one replica would serve one more request."""

    deadline: float  # the request's first-token deadline
    work: int  # prefill tokens computed before its first token, its own included
    prefill_rate: float  # predicted prefill tokens per second at the current decode load

    def first_token_at(self, now: float) -> float:
        return now + self.work / self.prefill_rate

    def slack(self, now: float) -> float:
        return self.deadline - self.first_token_at(now)
