"""One step of serving: the scheduler decides, the worker computes, the core keeps them in step.

Synchronous, with the clock injected, and the only place that drives
schedule -> execute -> on_step: the asyncio loop (`loop.py`) runs `prepare`
and `complete` on the event loop and `execute` on its step thread; the
simulator runs the same calls on a virtual clock with a latency-model worker
(`virtual.py`); benchmarks and tests call `step`. Because the worker may be
mid-step when a request arrives or leaves, the core never touches the worker
outside `prepare`: registrations and removals wait there.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from niyama.qos.plan import Plan, StepResult
from niyama.qos.scheduler import Scheduler
from niyama.qos.tiers import SloTargets

from .protocol import Worker
from .request import GenerationRequest, TokenOutput


@dataclass
class StepOutputs:
    tokens: list[TokenOutput] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # request id -> why


class EngineCore:
    def __init__(
        self, scheduler: Scheduler, worker: Worker, eos_token_ids: frozenset[int], clock: Callable[[], float]
    ) -> None:
        self.scheduler = scheduler
        self.worker = worker
        self.eos_token_ids = eos_token_ids
        self.clock = clock
        self._live: dict[str, GenerationRequest] = {}
        self._to_register: dict[str, GenerationRequest] = {}
        self._registered: set[str] = set()
        self._to_remove: set[str] = set()
        self._seeds = random.Random()

    @property
    def has_work(self) -> bool:
        return bool(self._live)

    def add(self, request: GenerationRequest) -> tuple[GenerationRequest, SloTargets]:
        """Queue a submitted request; returns it with its seed fixed when it samples, and its targets.

        Raises the scheduler's ``AdmissionError`` when it can never be served.
        """
        if request.params.samples and request.params.seed is None:
            request = request.seeded(self._seeds.getrandbits(63))
        targets = self.scheduler.add(request, request.arrival)
        self._live[request.id] = request
        self._to_register[request.id] = request
        return request, targets

    def abort(self, request_id: str) -> None:
        """Drop a request now (disconnect, stop sequence, failure): its KV blocks are free at once."""
        if self._live.pop(request_id, None) is None:
            return
        self.scheduler.finish(request_id)
        self._to_register.pop(request_id, None)
        if request_id in self._registered:
            self._to_remove.add(request_id)

    def settle(self) -> None:
        """Unregister finished requests from the worker; only call it while no step is running."""
        for request_id in self._to_remove:
            self.worker.remove_sequence(request_id)
            self._registered.discard(request_id)
        self._to_remove.clear()

    def prepare(self) -> tuple[Plan, StepOutputs]:
        """Bring the worker up to date and plan the next step (requests the worker refuses fail here)."""
        outputs = StepOutputs()
        self.settle()
        for request_id, request in self._to_register.items():
            try:
                self.worker.add_sequence(request_id, request.prompt_ids, request.params)
            except ValueError as error:
                outputs.failed[request_id] = str(error)
                continue
            self._registered.add(request_id)
        self._to_register.clear()
        for request_id in outputs.failed:
            self.abort(request_id)
        return self.scheduler.schedule(self.clock()), outputs

    def complete(self, result: StepResult) -> StepOutputs:
        outputs = StepOutputs()
        by_length = set(self.scheduler.on_step(result, self.clock()))
        for token in result.tokens:
            request = self._live.get(token.request_id)
            if request is None:  # aborted while the step ran
                continue
            # As TGI's stopping criteria: the length limit is checked before EOS.
            reason = None
            if token.request_id in by_length:
                reason = "length"
            elif token.token_id in self.eos_token_ids and not request.ignore_eos:
                reason = "eos_token"
            if reason is not None:
                self.abort(token.request_id)
            outputs.tokens.append(TokenOutput(token.request_id, token, reason))
        self.settle()
        return outputs

    def fail(self, plan: Plan, error: BaseException) -> StepOutputs:
        """A step raised: fail exactly the requests it was computing."""
        outputs = StepOutputs()
        for chunk in plan.chunks:
            if chunk.request_id in self._live:
                outputs.failed[chunk.request_id] = f"{type(error).__name__}: {error}"
                self.abort(chunk.request_id)
        self.settle()
        return outputs

    def fail_all(self, why: str) -> StepOutputs:
        """Fail every request it holds (its worker is lost, or the engine is shutting down)."""
        outputs = StepOutputs(failed=dict.fromkeys(self._live, why))
        for request_id in list(self._live):
            self.abort(request_id)
        return outputs

    def step(self) -> StepOutputs:
        """prepare, execute and complete in the calling thread (benchmarks, tests)."""
        plan, outputs = self.prepare()
        if plan.is_empty:
            return outputs
        try:
            result = self.worker.execute(plan)
        except Exception as error:  # noqa: BLE001 - a failed step fails its requests, not the engine
            outputs.failed.update(self.fail(plan, error).failed)
            return outputs
        outputs.tokens.extend(self.complete(result).tokens)
        return outputs
