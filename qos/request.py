"""What the router (or the simulator) hands the scheduler for each request."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Request:
    """A request as the scheduler sees it: token counts and targets, no text.

    ``ttft``/``tbt``/``ttlt`` are optional per-request overrides in seconds;
    they may only tighten the tier's targets (see ``tiers.apply_overrides``).
    ``arrival`` is on the same clock as the ``now`` given to the scheduler.
    """

    id: str
    tier: str
    arrival: float
    prompt_len: int
    max_new_tokens: int
    ttft: float | None = None
    tbt: float | None = None
    ttlt: float | None = None
