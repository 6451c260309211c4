"""QoS tiers and the latency targets a request is held to.

A tier is either *interactive* (a time-to-first-token and a
time-between-tokens target: chat) or *batch* (a time-to-last-token
deadline: summarisation jobs). Importance decides who gives way under
overload: the least important tier is relegated first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .durations import format_duration
from .errors import SloOverrideError

INTERACTIVE = "interactive"
BATCH = "batch"
KIND_FIELDS = {INTERACTIVE: ("ttft", "tbt"), BATCH: ("ttlt",)}


@dataclass(frozen=True, slots=True)
class SloTargets:
    """Seconds; ``None`` where the tier has no such objective."""

    ttft: float | None = None
    tbt: float | None = None
    ttlt: float | None = None

    @property
    def primary(self) -> str:
        """The objective a request "misses" by (goodput): TTFT if it has one, else TTLT."""
        return "ttft" if self.ttft is not None else "ttlt"


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    kind: str
    targets: SloTargets
    importance: float = 0.0
    expected_output_tokens: int | None = None

    @property
    def interactive(self) -> bool:
        return self.kind == INTERACTIVE


def apply_overrides(
    tier: Tier, ttft: float | None = None, tbt: float | None = None, ttlt: float | None = None
) -> SloTargets:
    """The tier's targets with a request's overrides; tightening only.

    Loosening is rejected rather than clamped: a client that asks for more
    time than its tier grants has misread its contract, and silently giving it
    less would hide that. Setting an objective the tier does not have (a TTFT
    on a batch tier) is rejected for the same reason.
    """
    targets = tier.targets
    for field, value in (("ttft", ttft), ("tbt", tbt), ("ttlt", ttlt)):
        if value is None:
            continue
        limit = getattr(targets, field)
        if limit is None:
            have = " and ".join(KIND_FIELDS[tier.kind])
            raise SloOverrideError(f"tier {tier.name!r} is {tier.kind} and has no {field} target (it has {have})")
        if not value > 0:
            raise SloOverrideError(f"{field} override must be positive, got {value!r}")
        if value > limit:
            raise SloOverrideError(
                f"{field} override {format_duration(value)} is looser than tier {tier.name!r}'s "
                f"{format_duration(limit)}; a request may only tighten its targets"
            )
        targets = replace(targets, **{field: value})
    return targets
