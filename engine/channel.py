"""The engine's `Worker` for a worker in another process, over any transport.

One mechanism for a local worker process (`process.WorkerProcess`, a pipe)
and a Ray actor (`ray_transport.RayTransport`): registrations and removals
queue here and travel with the next step, in order, and each request's block
table goes as the blocks added since the worker last saw it, so a step costs
one round trip whose size follows the step, not the requests' lengths. A
prompt the model could never run is refused here, from the worker's
`WorkerInfo`, exactly as an in-process runner refuses it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from niyama.qos.plan import Plan, StepResult

from .protocol import Change, SamplingParams, StepCall, WorkerInfo, check_prompt


class Transport(Protocol):
    """A worker process's calls: ``call("step", StepCall)`` and the like.

    Raises `WorkerLost` when the worker is gone, and the worker's own
    exception (`PlanError`, `StepFailed`...) when the call raised there.
    """

    def call(self, method: str, *args: object) -> object: ...

    def stop(self) -> None: ...


class WorkerClient:
    def __init__(self, transport: Transport, info: WorkerInfo) -> None:
        self.transport = transport
        self.info = info
        self._changes: list[Change] = []
        self._tables: dict[str, tuple[int, ...]] = {}  # each request's table as the worker has it

    def add_sequence(self, request_id: str, prompt_ids: tuple[int, ...], params: SamplingParams) -> None:
        check_prompt(prompt_ids, self.info.max_context, self.info.vocab_size)
        self._changes.append((request_id, tuple(prompt_ids), params))

    def remove_sequence(self, request_id: str) -> None:
        self._changes.append((request_id, None, None))
        self._tables.pop(request_id, None)

    def execute(self, plan: Plan) -> StepResult:
        changes, self._changes = tuple(self._changes), []
        call = StepCall(changes, self._deltas(plan), replace(plan, block_tables={}))
        return self.transport.call("step", call)

    def _deltas(self, plan: Plan) -> dict[str, tuple[int, tuple[int, ...]]]:
        deltas = {}
        for request_id, table in plan.block_tables.items():
            known = self._tables.get(request_id, ())
            if table is known:
                continue
            keep = len(known) if len(table) >= len(known) and table[: len(known)] == known else 0
            deltas[request_id] = (keep, table[keep:])
            self._tables[request_id] = table
        return deltas
