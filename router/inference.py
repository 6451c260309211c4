"""From a validated request to finished sequences: the engine, seen from the routes.

Every route goes through here: `admit` takes the request's concurrency
permits (429 beyond the server's or the API key's limit), `start` submits
one generation, `complete` runs a request to its end (`best_of` sequences
side by side, best first), and `timing_headers` computes TGI's timing
headers from the generation's own timestamps (the router's validation time
included).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from .admission import Admission, Permit
from .auth import Caller
from .engine import AsyncEngine, Generation
from .engine_core import GenerationRequest
from .metrics import Metrics
from .qos_headers import QosChoice
from .settings import ServerSettings
from .streaming import TokenEvent, TokenPipeline, token_batches
from .tokenizer import TextTokenizer
from .validation import ValidRequest


@dataclass
class Sequence:
    """One generation run to its end."""

    generation: Generation
    pipeline: TokenPipeline
    events: list[TokenEvent]

    @property
    def finish_reason(self) -> str:
        return self.pipeline.finish_reason or "length"

    @property
    def generated_tokens(self) -> int:
        return len(self.events)

    @property
    def logprob(self) -> float:
        return sum(event.logprob for event in self.events)


class Inference:
    def __init__(
        self, engine: AsyncEngine, tokenizer: TextTokenizer, settings: ServerSettings, metrics: Metrics
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.settings = settings
        self.metrics = metrics
        self.admission = Admission(
            settings.max_concurrent_requests, settings.max_concurrent_requests_per_key, settings.retry_after_seconds
        )
        self.limit = self.admission.total

    def admit(self, caller: Caller, count: int = 1) -> Permit:
        return self.admission.acquire(caller, count)

    def start(self, valid: ValidRequest, qos: QosChoice) -> tuple[Generation, TokenPipeline]:
        """Submit one generation (raises the scheduler's AdmissionError, or EngineStopping)."""
        request = GenerationRequest(
            valid.prompt_ids, valid.params, valid.max_new_tokens, qos.tier, qos.ttft, qos.tbt, qos.ttlt,
            valid.ignore_eos,
        )  # fmt: skip
        generation = self.engine.submit(request)
        return generation, TokenPipeline(self.tokenizer, valid.prompt_ids, valid.stop)

    async def run(self, generation: Generation, pipeline: TokenPipeline) -> Sequence:
        events: list[TokenEvent] = []
        async for batch in token_batches(generation, pipeline):
            if batch:
                events += batch
        return Sequence(generation, pipeline, events)

    async def complete(self, valid: ValidRequest, qos: QosChoice) -> list[Sequence]:
        """Run the request to its end: ``best_of`` sampled sequences in parallel, the most likely first."""
        started = [self.start(valid, qos) for _ in range(valid.best_of)]
        runs = [asyncio.ensure_future(self.run(generation, pipeline)) for generation, pipeline in started]
        try:
            sequences = await asyncio.gather(*runs)
        finally:
            for run in runs:
                run.cancel()  # one failed or the client left: stop the others too (their cleanup aborts them)
            await asyncio.gather(*runs, return_exceptions=True)
        return sorted(sequences, key=lambda sequence: sequence.logprob, reverse=True)

    def record_success(
        self, started: float, valid: ValidRequest, generation: Generation, generated: int
    ) -> dict[str, str]:
        """Count a finished request in /metrics; returns TGI's timing headers (milliseconds; compute time in s)."""
        now = time.monotonic()
        timing = generation.timing
        admitted = timing.admitted if timing.admitted is not None else timing.arrival
        total, validation = now - started, timing.arrival - started
        queue, inference = admitted - timing.arrival, now - admitted
        self.metrics.request_succeeded(
            total, validation, queue, inference, valid.input_length, generated, valid.max_new_tokens
        )
        return {
            "x-compute-type": self.settings.compute_type,
            "x-compute-time": f"{total:.6f}",
            "x-compute-characters": str(len(valid.inputs)),
            "x-total-time": str(int(total * 1000)),
            "x-validation-time": str(int(validation * 1000)),
            "x-queue-time": str(int(queue * 1000)),
            "x-inference-time": str(int(inference * 1000)),
            "x-time-per-token": str(int(inference * 1000 / max(generated, 1))),
            "x-prompt-tokens": str(valid.input_length),
            "x-generated-tokens": str(generated),
        }
