"""A snapshot of the scheduler for /metrics and the simulator's report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TierStats:
    queued: int  # waiting for compute, relegated ones included
    relegated: int  # relegated and not yet finished (waiting or running)
    prefilling: int  # partly prefilled, holding KV blocks
    running: int  # decoding
    relegated_total: int  # ever relegated (a counter)
    preempted_total: int  # KV-pressure preemptions (a counter)


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
    alpha: float  # current hybrid-priority weight, seconds per token
    prefill_rate: float  # estimated prefill tokens per second
    predictor_error: float | None  # mean absolute percentage error (fraction) of recent predictions
    steps: int
