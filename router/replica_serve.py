"""`niyama serve --replicas N` / `--ray-address`: the workers as Ray actors, placed across a cluster.

This process keeps the HTTP server, the tokenizer, and every replica's
scheduler and engine loop; each replica's worker (the same worker process a
local server runs) lives in a Ray actor. Ray places the actors with the
resources `ray_placement.place` asks for: GPUs per replica where the cluster
has GPUs, else an equal share of the CPU cores (torch threads set to match);
emulated devices (`--emulate`) always take a share of the cores. With no
`--ray-address` a local Ray cluster is started; with one, the replicas go
wherever that cluster has room, on any node.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os

import ray

from niyama.engine.launch import ReplicaRecipe
from niyama.engine.protocol import WorkerConfig
from niyama.engine.ray_transport import RayWorkers

from .ray_placement import place

log = logging.getLogger("niyama.serve")


def connect(address: str | None) -> None:
    """Join the Ray cluster at ``address``, or start a local one (no dashboard, no usage reporting)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)


def ray_workers(args: argparse.Namespace, replicas: int, config: WorkerConfig, recipe: ReplicaRecipe) -> RayWorkers:
    """Where ``replicas`` replicas fit on the cluster (ValueError when they do not)."""
    connect(args.ray_address)
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    if config.emulation is not None:  # an emulated device needs no GPU: its replicas share the cores
        nodes = [{name: amount for name, amount in node.items() if name != "GPU"} for node in nodes]
    placement = place(replicas, nodes, args.gpus_per_replica)
    log.info("starting %d replicas on Ray (%s)", replicas, placement.describe())
    config = dataclasses.replace(config, threads=placement.threads, gpus=int(placement.num_gpus) or 1)
    return RayWorkers(config, recipe, placement.num_cpus, placement.num_gpus)
