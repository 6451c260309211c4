"""A snapshot of the scheduler for /metrics and the simulator's report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class TierStats:
    queued: int  # waiting for compute, relegated ones included
    relegated: int  # relegated and not yet finished (waiting or running)
    prefilling: int  # partly prefilled, holding KV blocks
    running: int  # decoding
    relegated_total: int  # ever relegated (a counter)
    preempted_total: int  # KV-pressure preemptions (a counter)
    prompt_tokens_cached: int = 0  # known tokens admitted requests took from the prefix cache (a counter)
    prompt_tokens_computed: int = 0  # known tokens admitted requests had to compute (a counter)


@dataclass
class TierCounters:
    """The scheduler's running counts, one entry per tier in the tier file's order."""

    relegated_total: list[int]
    relegated_alive: list[int]
    preempted_total: list[int]
    reused: list[int]  # known tokens admitted requests took from the prefix cache
    admitted: list[int]  # known tokens of requests at admission

    @classmethod
    def zeros(cls, tiers: int) -> TierCounters:
        return cls(*([0] * tiers for _ in fields(cls)))

    def tier(self, i: int, queued: int, prefilling: int, running: int) -> TierStats:
        return TierStats(
            queued, self.relegated_alive[i], prefilling, running, self.relegated_total[i], self.preempted_total[i],
            self.reused[i], self.admitted[i] - self.reused[i],
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    policy: str
    tiers: Mapping[str, TierStats]
    queued: int
    relegated: int
    prefilling: int
    running: int
    relegated_total: int
    preempted_total: int
    free_blocks: int
    total_blocks: int
    block_size: int
    cached_blocks: int  # blocks holding a reusable prefix, read by a request or not
    evictions: int  # cached blocks whose memory was taken for other tokens (a counter)
    alpha: float  # current hybrid-priority weight, seconds per token
    prefill_rate: float  # estimated prefill tokens per second
    predictor_error: float | None  # mean absolute percentage error (fraction) of recent predictions
    steps: int


def combine_stats(parts: Sequence[SchedulerStats]) -> SchedulerStats:
    """Several replicas' schedulers as one: counts summed, rates and errors averaged (a cluster's view)."""
    first = parts[0]
    tiers = {
        name: TierStats(*(sum(getattr(p.tiers[name], f) for p in parts) for f in TierStats.__slots__))
        for name in first.tiers
    }
    errors = [p.predictor_error for p in parts if p.predictor_error is not None]
    return SchedulerStats(
        policy=first.policy,
        tiers=tiers,
        queued=sum(p.queued for p in parts),
        relegated=sum(p.relegated for p in parts),
        prefilling=sum(p.prefilling for p in parts),
        running=sum(p.running for p in parts),
        relegated_total=sum(p.relegated_total for p in parts),
        preempted_total=sum(p.preempted_total for p in parts),
        free_blocks=sum(p.free_blocks for p in parts),
        total_blocks=sum(p.total_blocks for p in parts),
        block_size=first.block_size,
        cached_blocks=sum(p.cached_blocks for p in parts),
        evictions=sum(p.evictions for p in parts),
        alpha=sum(p.alpha for p in parts) / len(parts),
        prefill_rate=sum(p.prefill_rate for p in parts),
        predictor_error=sum(errors) / len(errors) if errors else None,
        steps=sum(p.steps for p in parts),
    )
