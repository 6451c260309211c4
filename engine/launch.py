"""Starting replicas: a worker somewhere, then its scheduler here.

`ReplicaRecipe` turns a started worker (its transport and `WorkerInfo`) into
`ReplicaParts`: a latency predictor (the given profile or reference model,
else the worker's own start-up profile of its model and device), a block
allocator the size of the worker's KV cache, and the scheduler. Each way of
starting workers (`LocalWorkers`: child processes; `ray_transport.RayWorkers`:
Ray actors) is a `launch(index)` for the replica set, which calls it again to
replace a lost replica.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from niyama.qos.config import TierConfig
from niyama.qos.kv_blocks import BlockAllocator
from niyama.qos.policy import PolicyConfig
from niyama.qos.predictor import LatencyPredictor
from niyama.qos.scheduler import Scheduler

from .channel import Transport, WorkerClient
from .faults import FaultyWorker
from .process import WorkerProcess
from .protocol import Worker, WorkerConfig, WorkerInfo
from .replicas import Launch, ReplicaParts


@dataclass(frozen=True)
class ReplicaRecipe:
    tiers: TierConfig
    policy: PolicyConfig
    latency_profile: str | None = None  # a reference model or profile JSON; None: the worker's own profile
    inject_step_failures: float = 0.0  # testing: this share of steps fails on purpose (`faults.FaultyWorker`)
    inject_seed: int | None = None

    def predictor(self, transport: Transport, info: WorkerInfo) -> LatencyPredictor:
        if self.latency_profile is not None:
            return LatencyPredictor.load(self.latency_profile)
        origin = f"profiled on {info.node}"
        data = json.loads(transport.call("latency_profile"))
        return LatencyPredictor.from_profile_data(data, origin, info.checkpoint, origin)

    def parts(self, transport: Transport, info: WorkerInfo, where: str) -> ReplicaParts:
        allocator = BlockAllocator(info.num_blocks, info.block_size)
        scheduler = Scheduler(self.policy, self.tiers, allocator, self.predictor(transport, info))
        worker: Worker = WorkerClient(transport, info)
        if self.inject_step_failures:
            worker = FaultyWorker(worker, self.inject_step_failures, self.inject_seed)
        return ReplicaParts(scheduler, worker, info.eos_token_ids, transport.stop, where, info)


@dataclass(frozen=True)
class LocalWorkers:
    """Replicas whose workers are child processes of this one (`niyama serve` without Ray)."""

    config: WorkerConfig
    recipe: ReplicaRecipe

    def start(self, index: int) -> ReplicaParts:
        process, info = WorkerProcess.start(self.config)
        try:
            return self.recipe.parts(process, info, f"{info.device_name}, worker process {info.pid}")
        except BaseException:
            process.stop()
            raise

    async def launch(self, index: int) -> ReplicaParts:
        return await asyncio.to_thread(self.start, index)


async def launch_all(launch: Launch, count: int) -> list[ReplicaParts]:
    """``count`` replicas loading side by side; if one fails, the others are stopped too."""
    results = await asyncio.gather(*(launch(i) for i in range(count)), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        for parts in results:
            if isinstance(parts, ReplicaParts):
                parts.stop()
        raise failures[0]
    return list(results)
