"""Driving a scheduler by hand in tests: the engine core on a virtual clock, as the simulator drives it."""

from __future__ import annotations

import pytest

from niyama.engine.core import EngineCore
from niyama.engine.protocol import SamplingParams
from niyama.engine.request import GenerationRequest
from niyama.engine.virtual import VirtualClock, VirtualWorker
from niyama.qos.config import builtin_tier_config
from niyama.qos.kv_blocks import BlockAllocator
from niyama.qos.plan import Plan
from niyama.qos.predictor import LatencyPredictor
from niyama.qos.scheduler import Scheduler, make_scheduler
from niyama.qos.tiers import apply_overrides


class Driver:
    """A scheduler in an engine core whose steps take ``seconds`` of virtual time each."""

    def __init__(self, policy: str, blocks: int = 10_000, block_size: int = 16, **options) -> None:
        self.tiers = builtin_tier_config("paper")
        self.allocator = BlockAllocator(blocks, block_size)
        self.predictor = LatencyPredictor.reference("a100-llama3-8b")
        self.scheduler: Scheduler = make_scheduler(policy, self.tiers, self.allocator, self.predictor, **options)
        self.clock = VirtualClock()
        self.seconds = 0.05
        self.core = EngineCore(self.scheduler, VirtualWorker(lambda *shape: self.seconds), frozenset(), self.clock)

    def add(self, rid: str, tier: str, arrival: float, prompt: int, new: int = 10, **overrides) -> None:
        targets = apply_overrides(self.tiers.tier(tier), **overrides) if overrides else None
        self.core.add(GenerationRequest(rid, tier, arrival, prompt, new, targets, (), SamplingParams(), True))

    def step(self, now: float, seconds: float = 0.05) -> tuple[Plan, list[str]]:
        """One step from ``now``: its plan, and the requests that reached their max new tokens in it."""
        self.clock.now, self.seconds = now, seconds
        plan, _ = self.core.prepare()
        result = self.core.worker.execute(plan)
        self.clock.now = now + seconds
        finished = [out.request_id for out in self.core.complete(result).tokens if out.finish_reason == "length"]
        return plan, finished


def spans(plan: Plan) -> list[tuple]:
    return [(c.request_id, c.start, c.length, c.sample, c.is_decode) for c in plan.chunks]


@pytest.fixture
def driver():
    return Driver
