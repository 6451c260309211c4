"""How many Ray resources each replica's actor asks for, decided before any actor starts.

A Ray actor whose resources no node can offer waits forever, so the
decision looks at each node, not only at the cluster's totals: a replica of
2 GPUs needs 2 GPUs on one node, and CPU replicas get a share small enough
that every one of them fits on some node. Pure function of the nodes' resources
(`ray.nodes()`), so it is tested without a cluster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

RAY_RESOLUTION = 10_000  # Ray counts fractional resources in steps of 1/10,000


@dataclass(frozen=True)
class Placement:
    """The Ray resources of one replica's actor."""

    num_cpus: float
    num_gpus: float
    threads: int | None  # torch CPU threads, for CPU replicas

    def describe(self) -> str:
        if self.num_gpus:
            return f"{self.num_gpus:g} GPU each"
        return f"{self.num_cpus:g} CPU cores each"


def _fits(share: float, capacities: Sequence[float]) -> int:
    """Actors of ``share`` units that the nodes hold together (an actor never spans nodes)."""
    return sum(math.floor(capacity / share + 1e-9) for capacity in capacities)


def place(replicas: int, nodes: Sequence[dict[str, float]], gpus_per_replica: int = 1) -> Placement:
    """``gpus_per_replica`` GPUs of one node per replica where the cluster has GPUs, else a share of the cores.

    ``nodes``: each live node's resources, as `ray.nodes()` reports them.
    CPU replicas get the largest share of cores (possibly fractional) that
    lets all of them start at once; their torch threads are that share,
    rounded down, at least 1.
    """
    if replicas < 1 or gpus_per_replica < 1:
        raise ValueError(f"--replicas and --gpus-per-replica must be at least 1, got {replicas}, {gpus_per_replica}")
    gpus = [node.get("GPU", 0.0) for node in nodes]
    if sum(gpus):
        room = _fits(gpus_per_replica, gpus)
        if room < replicas:
            raise ValueError(
                f"{replicas} replicas of {gpus_per_replica} GPU(s) each do not fit the Ray cluster: its nodes have "
                f"{', '.join(f'{g:g}' for g in gpus)} GPUs, room for {room} such replicas"
            )
        return Placement(1, gpus_per_replica, None)
    cpus = [node.get("CPU", 0.0) for node in nodes if node.get("CPU", 0.0) > 0]
    if not cpus:
        raise ValueError("the Ray cluster has neither GPUs nor CPUs to place replicas on")
    candidates = sorted({capacity / k for capacity in cpus for k in range(1, replicas + 1)}, reverse=True)
    share = next(s for s in candidates if _fits(s, cpus) >= replicas)
    share = math.floor(share * RAY_RESOLUTION + 1e-6) / RAY_RESOLUTION  # so that Ray's own rounding cannot overfill
    return Placement(share, 0, max(1, math.floor(share + 1e-9)))
