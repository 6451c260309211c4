"""`niyama serve --replicas N`: N model replicas on a Ray cluster behind one front router.

This process keeps the HTTP server, the tokenizer, and every replica's
scheduler and engine loop; each replica's model and KV cache live in a Ray
actor (`worker.ray_worker`). Ray places the actors with the resources
`ray_placement.place` asks for: one GPU per replica where the cluster has
GPUs, else an equal share of the CPU cores (torch threads set to match).
With no `--ray-address` a local Ray cluster is started; with one, the
replicas go wherever that cluster has room, on any node. Each replica's
latency predictor comes from `--latency-profile`, else from the start-up profile
its actor measures once per model and device (cached on that node).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field

import ray
from ray.exceptions import RayActorError

from niyama.qos.config import TierConfig, resolve_tier_config
from niyama.qos.errors import ProfileError, QosConfigError
from niyama.qos.kv_blocks import BlockAllocator
from niyama.qos.predictor import LatencyPredictor
from niyama.qos.routing import make_routing
from niyama.qos.scheduler import make_scheduler
from niyama.worker.loading import ModelLoadError, load_tokenizer
from niyama.worker.ray_worker import RemoteWorker, WorkerConfig, launch

from .app import create_app
from .ray_placement import Placement, place
from .replica_metrics import replica_engine
from .replicas import ReplicaParts
from .serve import run_app, scheduler_options, server_settings
from .tokenizer import TextTokenizer

log = logging.getLogger("niyama.serve")


class ReplicaStartError(RuntimeError):
    """A replica's actor could not load its model; the message carries the actor's own error."""


def connect(address: str | None) -> None:
    """Join the Ray cluster at ``address``, or start a local one (no dashboard, no usage reporting)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)


@dataclass
class RayReplicas:
    """The recipe for one replica: its actor on Ray, then its scheduler in this process."""

    worker: WorkerConfig
    placement: Placement
    tiers: TierConfig
    policy: str = "niyama"
    options: dict = field(default_factory=dict)  # PolicyConfig fields
    latency_profile: str | None = None  # a reference model or profile JSON; None: the actor's own profile

    async def launch(self, index: int) -> ReplicaParts:
        actor = launch(self.worker, num_cpus=self.placement.num_cpus, num_gpus=self.placement.num_gpus)
        try:
            info = await actor.info.remote()
            if self.latency_profile is not None:
                predictor = LatencyPredictor.load(self.latency_profile)
            else:
                text = await actor.latency_profile.remote()
                origin = f"profiled on {info.node}"
                predictor = LatencyPredictor.from_profile_data(json.loads(text), origin, info.checkpoint, origin)
        except BaseException as error:  # a failed or cancelled start must not leave the actor holding its device
            ray.kill(actor)
            if isinstance(error, RayActorError):
                raise ReplicaStartError(f"replica {index} could not start: {_cause(error)}") from error
            raise
        allocator = BlockAllocator(info.num_blocks, info.block_size)
        scheduler = make_scheduler(self.policy, self.tiers, allocator, predictor, **self.options)
        worker = RemoteWorker(actor, info)
        where = f"{info.device_name} on {info.node}"
        return ReplicaParts(scheduler, worker, info.eos_token_ids, functools.partial(ray.kill, actor), where)

    async def launch_all(self, count: int) -> list[ReplicaParts]:
        """``count`` replicas loading side by side; if one fails, the others are stopped too."""
        results = await asyncio.gather(*(self.launch(i) for i in range(count)), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            for parts in results:
                if isinstance(parts, ReplicaParts):
                    parts.stop()
            raise failures[0]
        return list(results)


def _cause(error: RayActorError) -> str:
    """The actor's own exception line out of Ray's report (which starts with its own preamble)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if "Error:" in line and not line.startswith(("ray.", "The actor"))]
    return (named or lines or [type(error).__name__])[-1]


def serve_replicas(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        tiers = resolve_tier_config(args.qos_config)
        if args.latency_profile is not None:
            LatencyPredictor.load(args.latency_profile)  # fail fast, before any actor starts
        tokenizer = load_tokenizer(args.model_id)  # also converts a GGUF once, before the replicas read it
        connect(args.ray_address)
        nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
        placement = place(args.replicas, nodes, args.gpus_per_replica)
    except (QosConfigError, ModelLoadError, ProfileError, ValueError) as error:
        print(f"niyama serve: {error}", file=sys.stderr)
        return 2
    worker = WorkerConfig(
        args.model_id, args.device, args.dtype, args.max_batch_total_tokens, placement.threads,
        int(placement.num_gpus) or 1,
    )  # fmt: skip
    recipe = RayReplicas(worker, placement, tiers, args.policy, scheduler_options(args), args.latency_profile)
    log.info("starting %d replicas on Ray (%s)", args.replicas, placement.describe())
    try:
        parts = asyncio.run(recipe.launch_all(args.replicas))
    except ReplicaStartError as error:
        print(f"niyama serve: {error}", file=sys.stderr)
        return 2
    infos = [p.worker.info for p in parts]
    try:
        settings = server_settings(
            args, infos[0].model_id, min(i.max_context for i in infos), min(i.capacity_tokens for i in infos),
            infos[0].device,
        )  # fmt: skip
    except ValueError as error:
        for p in parts:
            p.stop()
        print(f"niyama serve: {error}", file=sys.stderr)
        return 2
    engine = replica_engine(parts, recipe.launch, make_routing(args.routing))
    app = create_app(engine, TextTokenizer(tokenizer), tiers, settings, shutdown_grace_seconds=args.grace_period)
    lines = [f"model: {infos[0].model_id} ({infos[0].dtype}); routing: {args.routing}"]
    lines += [
        f"replica {i}: {p.where}; KV cache {p.worker.info.capacity_tokens} tokens; "
        f"latency model: {p.scheduler.predictor.name}"
        for i, p in enumerate(parts)
    ]
    lines.append(f"QoS: policy {args.policy}, tiers {', '.join(tiers.names)} (default {tiers.default}; {tiers.source})")
    return run_app(app, args, settings, started, tuple(lines))
