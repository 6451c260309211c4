"""Helpers for driving a scheduler by hand in tests."""

from __future__ import annotations

import pytest

from niyama.qos.config import builtin_tier_config
from niyama.qos.kv_blocks import BlockAllocator
from niyama.qos.plan import Plan, StepResult
from niyama.qos.predictor import LatencyPredictor
from niyama.qos.request import Request
from niyama.qos.scheduler import Scheduler, make_scheduler


class Driver:
    """A scheduler plus a virtual clock that steps it like the engine loop does."""

    def __init__(self, policy: str, blocks: int = 10_000, block_size: int = 16, **options) -> None:
        self.tiers = builtin_tier_config("paper")
        self.allocator = BlockAllocator(blocks, block_size)
        self.predictor = LatencyPredictor.reference("a100-llama3-8b")
        self.scheduler: Scheduler = make_scheduler(policy, self.tiers, self.allocator, self.predictor, **options)

    def add(self, rid: str, tier: str, arrival: float, prompt: int, new: int = 10, **overrides) -> None:
        self.scheduler.add(Request(rid, tier, arrival, prompt, new, **overrides), arrival)

    def step(self, now: float, seconds: float = 0.05) -> tuple[Plan, list[str]]:
        plan = self.scheduler.schedule(now)
        return plan, self.scheduler.on_step(StepResult((), seconds), now + seconds)


def spans(plan: Plan) -> list[tuple]:
    return [(c.request_id, c.start, c.length, c.sample, c.is_decode) for c in plan.chunks]


@pytest.fixture
def driver():
    return Driver
