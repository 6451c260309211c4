"""The worker boundary as a Ray actor: one replica's model and KV tensors in their own process.

`WorkerActor` loads the model and sizes its KV cache where Ray placed it (a
GPU of any node, or a share of a host's cores), and runs `execute(plan)` for
the front process, where the replica's scheduler and engine stay: a step is
one call, a plan and a `StepResult` are small frozen dataclasses, and the
scheduler needs no network hop to decide. `RemoteWorker` is the engine's
`Worker` for such an actor. Registrations and removals are queued locally and
travel with the next step, in order, so each step costs one round trip; a
prompt the model could never run is refused locally, from the actor's
`WorkerInfo`, exactly as the in-process runner refuses it. An actor that dies
makes the step raise `WorkerLost`.

Needs the `ray` extra (`pip install 'niyama[ray]'`).
"""

from __future__ import annotations

from dataclasses import dataclass

import ray
import torch
from ray.exceptions import RayActorError, RayTaskError

from niyama.qos.plan import Plan, StepResult

from .kv_cache import size_cache
from .loading import load_model
from .profile import cached_profile, device_name
from .runner import ModelRunner, WorkerLost, check_prompt
from .sampling import SamplingParams

# One queued change to the actor's sequences: (request id, prompt, params) registers, (request id, None, None) removes.
Registration = tuple[str, list[int] | None, SamplingParams | None]


@dataclass(frozen=True)
class WorkerConfig:
    """What an actor loads: the same model options as `niyama serve`."""

    model_id: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    kv_cache_tokens: int | None = None  # None: a share of the free memory where the actor runs
    threads: int | None = None  # torch CPU threads: replicas on one host split its cores
    gpus: int = 1  # more than 1: the model is spread over the actor's GPUs (placement.py)


@dataclass(frozen=True)
class WorkerInfo:
    """What the front process needs to know about a loaded replica."""

    model_id: str
    checkpoint: str
    device: str  # torch device type: "cuda" or "cpu" (the x-compute-type header)
    device_name: str
    dtype: str
    num_blocks: int
    block_size: int
    max_context: int
    vocab_size: int
    eos_token_ids: frozenset[int]
    node: str  # the Ray node's address

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size


class WorkerActor:
    """Runs inside a Ray worker process (``ray.remote(WorkerActor)``); see `launch`."""

    def __init__(self, config: WorkerConfig) -> None:
        if config.threads:
            torch.set_num_threads(config.threads)
        self.loaded = loaded = load_model(config.model_id, device=config.device, dtype=config.dtype, gpus=config.gpus)
        spec = size_cache(
            loaded.model.config, loaded.dtype, loaded.device, kv_cache_tokens=config.kv_cache_tokens,
            layer_devices=loaded.layer_devices,
        )  # fmt: skip
        self.runner = ModelRunner(loaded, spec)

    def info(self) -> WorkerInfo:
        loaded, spec = self.loaded, self.runner.spec
        return WorkerInfo(
            model_id=loaded.model_id,
            checkpoint=loaded.path.name,
            device=loaded.device.type,
            device_name=device_name(loaded.device),
            dtype=str(loaded.dtype).removeprefix("torch."),
            num_blocks=spec.num_blocks,
            block_size=spec.block_size,
            max_context=loaded.max_context,
            vocab_size=self.runner.vocab_size,
            eos_token_ids=loaded.eos_token_ids,
            node=ray.util.get_node_ip_address(),
        )

    def latency_profile(self) -> str:
        """This replica's start-up profile (JSON text), measured once per model and device on its node."""
        return cached_profile(self.loaded).read_text(encoding="utf-8")

    def step(self, registrations: list[Registration], plan: Plan) -> StepResult:
        for request_id, prompt_ids, params in registrations:
            if prompt_ids is None:
                self.runner.remove_sequence(request_id)
            else:
                self.runner.add_sequence(request_id, prompt_ids, params)
        return self.runner.execute(plan)


def launch(config: WorkerConfig, *, num_cpus: float, num_gpus: float, name: str | None = None):
    """Start a `WorkerActor` (it loads in the background; ``actor.info.remote()`` resolves once it has)."""
    options: dict[str, object] = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_restarts": 0}
    if name is not None:
        options["name"] = name
    return ray.remote(WorkerActor).options(**options).remote(config)


class RemoteWorker:
    """`EngineCore`'s worker for a `WorkerActor`; called between steps on the event loop, `execute` off it."""

    def __init__(self, actor, info: WorkerInfo) -> None:
        self.actor = actor
        self.info = info
        self._pending: list[Registration] = []

    def add_sequence(self, request_id: str, prompt_ids: list[int], params: SamplingParams) -> int | None:
        check_prompt(prompt_ids, self.info.max_context, self.info.vocab_size)
        self._pending.append((request_id, list(prompt_ids), params))
        return params.seed

    def remove_sequence(self, request_id: str) -> None:
        self._pending.append((request_id, None, None))

    def execute(self, plan: Plan) -> StepResult:
        registrations, self._pending = self._pending, []
        try:
            return ray.get(self.actor.step.remote(registrations, plan))
        except RayTaskError as error:  # the step itself raised: the same exception as in-process
            raise error.cause from None
        except RayActorError as error:
            raise WorkerLost(f"the worker on {self.info.node} is gone: {_first_line(error)}") from error


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
