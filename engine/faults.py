"""Fault injection: a worker that fails chosen steps, to prove that failures stay contained.

`niyama serve --inject-step-failures RATE` wraps each replica's worker in
`FaultyWorker`, which raises `InjectedFault` in that fraction of steps
(seeded with `--inject-seed`, so a soak run is reproducible). The engine
treats it as any failed forward pass: exactly the requests of that step end
with a 424 / in-stream `generation` error, their KV blocks are freed, and the
next steps run normally. Tests and `bench/soak.py` also call `fail_next` to
fail the very next steps. Without the flag the runner is not wrapped at all,
so the normal path pays nothing.
"""

from __future__ import annotations

import random
import threading

from niyama.qos.plan import Plan, StepResult

from .protocol import SamplingParams, Worker


class InjectedFault(RuntimeError):
    """A step failure injected on purpose."""


class WrappedWorker:
    """A worker that acts before each step of the worker it wraps (fault injection; tests pace or stop steps)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def add_sequence(self, request_id: str, prompt_ids: tuple[int, ...], params: SamplingParams) -> None:
        self.worker.add_sequence(request_id, prompt_ids, params)

    def remove_sequence(self, request_id: str) -> None:
        self.worker.remove_sequence(request_id)

    def before_step(self, plan: Plan) -> None:
        """Runs on the step thread before each step; raising fails the step."""

    def execute(self, plan: Plan) -> StepResult:
        self.before_step(plan)
        return self.worker.execute(plan)


class FaultyWorker(WrappedWorker):
    """``worker``, except that a share ``rate`` of steps (and any step asked for with `fail_next`) raises."""

    def __init__(self, worker: Worker, rate: float = 0.0, seed: int | None = None) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"the step failure rate must be in [0, 1], got {rate}")
        super().__init__(worker)
        self.rate = rate
        self.injected = 0  # steps failed so far
        self._random = random.Random(seed)
        self._forced = 0
        self._lock = threading.Lock()  # fail_next comes from another thread than execute
        self._steps = 0

    def fail_next(self, steps: int = 1) -> None:
        """Fail the next ``steps`` steps, whatever the rate."""
        with self._lock:
            self._forced += steps

    def before_step(self, plan: Plan) -> None:
        with self._lock:
            self._steps += 1
            forced, self._forced = self._forced > 0, max(self._forced - 1, 0)
            fail = forced or self._random.random() < self.rate
            self.injected += fail
        if fail:
            raise InjectedFault(f"injected fault in step {self._steps} ({len(plan.chunks)} requests)")
