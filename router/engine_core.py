"""One step of serving: the scheduler decides, the worker computes, the core keeps them in step.

Synchronous, with the clock injected. The async engine loop drives the same
three calls (`prepare` and `complete` on the event loop, `execute` on a
worker thread); the engine benchmark drives `step` in a plain loop. Because
the worker may be mid-step when a request arrives or leaves, the core never
touches the worker outside `prepare`: registrations and removals wait there.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from niyama.qos.plan import Plan, SampledToken, StepResult
from niyama.qos.request import Request
from niyama.qos.scheduler import Scheduler
from niyama.worker.sampling import SamplingParams


@dataclass(frozen=True)
class GenerationRequest:
    """A validated request, as the HTTP layer hands it to the engine."""

    prompt_ids: tuple[int, ...]
    params: SamplingParams
    max_new_tokens: int
    tier: str
    ttft: float | None = None  # tightened targets, seconds
    tbt: float | None = None
    ttlt: float | None = None
    ignore_eos: bool = False


@dataclass(frozen=True)
class TokenOutput:
    request_id: str
    token: SampledToken
    finish_reason: str | None  # "eos_token" or "length" on a request's last token


@dataclass
class StepOutputs:
    tokens: list[TokenOutput] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # request id -> why


class Worker(Protocol):
    def add_sequence(self, request_id: str, prompt_ids: list[int], params: SamplingParams) -> int | None: ...
    def remove_sequence(self, request_id: str) -> None: ...
    def execute(self, plan: Plan) -> StepResult: ...


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

    def add(self, request_id: str, request: GenerationRequest, arrival: float) -> GenerationRequest:
        """Queue a request; returns it with its seed fixed when it samples.

        Raises the scheduler's ``AdmissionError`` when it can never be served.
        """
        if request.params.samples and request.params.seed is None:
            request = replace(request, params=replace(request.params, seed=self._seeds.getrandbits(63)))
        self.scheduler.add(
            Request(request_id, request.tier, arrival, len(request.prompt_ids), request.max_new_tokens,
                    request.ttft, request.tbt, request.ttlt),
            arrival,
        )  # fmt: skip
        self._live[request_id] = request
        self._to_register[request_id] = request
        return request

    def abort(self, request_id: str) -> None:
        """Drop a request now (disconnect, stop sequence): its KV blocks are free at once."""
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
                self.worker.add_sequence(request_id, list(request.prompt_ids), request.params)
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

    def step(self) -> StepOutputs:
        """prepare, execute and complete in the calling thread (benchmarks, tests)."""
        plan, outputs = self.prepare()
        if plan.is_empty:
            return outputs
        try:
            result = self.worker.execute(plan)
        except Exception as error:  # noqa: BLE001 - a failed step fails its requests, not the engine
            failed = self.fail(plan, error)
            outputs.failed.update(failed.failed)
            return outputs
        done = self.complete(result)
        outputs.tokens.extend(done.tokens)
        return outputs
