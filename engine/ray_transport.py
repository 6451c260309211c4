"""Workers as Ray actors (`niyama serve --replicas N` / `--ray-address`): the same host, another transport.

`WorkerActor` hosts the same `worker.host.WorkerHost` a local worker process
runs, wherever Ray places it (a GPU of any node, or a share of a host's
cores); the worker package (and torch with it) is imported inside the
actor's process only, never by importing this module. `RayTransport` is the
engine's `Transport` to such an actor: an actor that died makes a call raise
`WorkerLost`. Needs the `ray` extra (`pip install 'niyama[ray]'`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import ray
from ray.exceptions import RayActorError

from .launch import ReplicaRecipe
from .protocol import WorkerConfig, WorkerLost, WorkerStartError
from .replicas import ReplicaParts


class WorkerActor:
    """Runs inside a Ray worker process (``ray.remote(WorkerActor)``)."""

    def __init__(self, config: WorkerConfig) -> None:
        from niyama.worker.host import WorkerHost  # torch loads here, in the actor's own process

        self.host = WorkerHost.load(config, ray.util.get_node_ip_address())

    def call(self, method: str, args: tuple) -> tuple[bool, object]:
        return self.host.handle(method, args)


class RayTransport:
    def __init__(self, actor) -> None:
        self.actor = actor

    def call(self, method: str, *args: object) -> object:
        try:
            ok, value = ray.get(self.actor.call.remote(method, args))
        except RayActorError as error:
            raise WorkerLost(f"the worker actor is gone: {_cause(error)}") from None
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        ray.kill(self.actor)


def _cause(error: RayActorError) -> str:
    """The actor's own exception line out of Ray's report (which starts with its own preamble)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if "Error:" in line and not line.startswith(("ray.", "The actor"))]
    return (named or lines or [type(error).__name__])[-1]


@dataclass(frozen=True)
class RayWorkers:
    """Replicas whose workers are Ray actors, each asking for ``num_cpus`` / ``num_gpus``."""

    config: WorkerConfig
    recipe: ReplicaRecipe
    num_cpus: float
    num_gpus: float

    async def launch(self, index: int) -> ReplicaParts:
        options = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "max_restarts": 0}
        actor = ray.remote(WorkerActor).options(**options).remote(self.config)
        transport = RayTransport(actor)
        try:
            ok, info = await actor.call.remote("info", ())
            if not ok:
                raise info
            return await asyncio.to_thread(self.recipe.parts, transport, info, f"{info.device_name} on {info.node}")
        except BaseException as error:  # a failed or cancelled start must not leave the actor holding its device
            ray.kill(actor)
            if isinstance(error, RayActorError):
                raise WorkerStartError(f"replica {index} could not start: {_cause(error)}") from error
            raise
