"""A worker without a model: a step takes the time a latency model gives its shape.

The simulator runs the engine core with this worker on a virtual clock. It
returns one token for every chunk that samples, exactly as a real worker
would (ids taken in turn from ``tokens``), and the step's time from
``step_time``: in the simulator the device's truth (`engine/truth.py`), a
separate instance from the scheduler's predictor, so the predictor's online
correction is exercised honestly. With a step time of zero it is the null
worker of the router benchmark.
"""

from __future__ import annotations

from niyama.qos.plan import Plan, SampledToken, StepResult
from niyama.qos.sessions import SIMULATED_TOKEN

from .protocol import SamplingParams, StepTime


class VirtualClock:
    """The simulation's time: set by the event driver, read by the engine core."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class VirtualWorker:
    def __init__(self, step_time: StepTime, tokens: tuple[int, ...] = (SIMULATED_TOKEN,)) -> None:
        self.step_time = step_time
        self.tokens = tokens
        self._turn = 0

    def add_sequence(self, request_id: str, prompt_ids: tuple[int, ...], params: SamplingParams) -> None:
        return None

    def remove_sequence(self, request_id: str) -> None:
        return None

    def execute(self, plan: Plan) -> StepResult:
        shape = plan.shape
        seconds = self.step_time(shape.prefill_tokens, shape.decode_tokens, shape.decode_context, shape.prefill_context)
        sampled = []
        for chunk in plan.chunks:
            if chunk.sample:
                sampled.append(SampledToken(chunk.request_id, self.tokens[self._turn % len(self.tokens)], 0.0))
                self._turn += 1
        return StepResult(tuple(sampled), seconds)
