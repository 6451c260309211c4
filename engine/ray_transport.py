"""Workers as Ray actors (`niyama serve --replicas N` / `--ray-address`): the same host, another transport.

`WorkerActor` starts the same worker process a local server starts
(`process.WorkerProcess`: ``python -m niyama.worker.host``), wherever Ray
places the actor (a GPU of any node, or a share of a host's cores, whose
environment the process inherits), and passes each call on to it; so the
engine never imports the worker, and a worker ends with its actor as it
ends with a local server. `RayTransport` is the engine's `Transport` to such
an actor: a dead actor, or a dead worker behind it, makes a call raise
`WorkerLost`. Needs the `ray` extra (`pip install 'niyama[ray]'`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

import ray
from ray.exceptions import RayActorError

from .launch import ReplicaRecipe
from .process import WorkerProcess
from .protocol import WorkerConfig, WorkerInfo, WorkerLost, WorkerStartError
from .replicas import ReplicaParts


class WorkerActor:
    """Runs inside a Ray worker process (``ray.remote(WorkerActor)``)."""

    def __init__(self, config: WorkerConfig) -> None:
        self.process, info = WorkerProcess.start(config)
        self.loaded = replace(info, node=ray.util.get_node_ip_address())

    def info(self) -> WorkerInfo:
        return self.loaded

    def call(self, method: str, args: tuple) -> tuple[bool, object]:
        """(True, the call's value) or (False, the exception to raise in the engine), as the process answers."""
        try:
            return True, self.process.call(method, *args)
        except Exception as error:  # noqa: BLE001 - the worker's own error, or WorkerLost: the engine decides
            return False, error


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
            info = await actor.info.remote()
            return await asyncio.to_thread(self.recipe.parts, transport, info, f"{info.device_name} on {info.node}")
        except BaseException as error:  # a failed or cancelled start must not leave the actor holding its device
            ray.kill(actor)
            if isinstance(error, RayActorError):
                raise WorkerStartError(f"replica {index} could not start: {_cause(error)}") from error
            raise
