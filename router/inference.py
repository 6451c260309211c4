"""From a validated request to finished sequences: the engine, seen from the routes.

Every route goes through here: `start_admitted` takes a request's
concurrency permits (429 beyond the server's or the API key's limit) and
submits its generations, all or nothing, so that no route has its own
admit/start/release sequence to get wrong; `run_all` runs started
generations to their end (a refusal on the way, 429 or the scheduler's,
is counted per tier in /metrics as a rejected request: a miss);
`record_success` counts a finished request and
computes TGI's timing headers from the generation's own timestamps (the
router's validation time included); `summed_headers` adds up those of a
request's several prompts, as TGI's /v1/completions does.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from niyama.engine.api import Engine, GenerationHandle
from niyama.engine.replicas import EngineStopping, NoReplicaServing
from niyama.engine.request import GenerationRequest
from niyama.qos.errors import RequestTooLargeError
from niyama.qos.tiers import SloTargets

from .admission import Admission, Permit
from .auth import Caller
from .errors import ApiError
from .metrics import Metrics
from .settings import ServerSettings
from .streaming import TokenEvent, TokenPipeline, token_batches
from .tokenizer import TextTokenizer
from .validation import ValidRequest

REFUSALS = {RequestTooLargeError: "too_large", NoReplicaServing: "unavailable", EngineStopping: "unavailable"}


@dataclass
class Sequence:
    """One generation run to its end."""

    generation: GenerationHandle
    pipeline: TokenPipeline
    events: list[TokenEvent]

    @property
    def finish_reason(self) -> str:
        return self.pipeline.finish_reason or "length"

    @property
    def generated_tokens(self) -> int:
        return len(self.events)

    @property
    def mean_logprob(self) -> float:
        """The mean over generated tokens, as TGI's best_of ranks: a sum would favour short answers."""
        return sum(event.logprob for event in self.events) / max(len(self.events), 1)


def best_first(group: list[Sequence]) -> list[Sequence]:
    """``group`` by mean logprob, highest first; ties keep their order (TGI keeps the first maximum)."""
    return sorted(group, key=lambda sequence: sequence.mean_logprob, reverse=True)


@dataclass
class Admitted:
    """A request's concurrency permits and the generations started under them.

    `close` aborts whatever is still running and gives the permits back; a
    request's answer calls it once it is over, whatever happened.
    """

    permit: Permit
    started: list[tuple[GenerationHandle, TokenPipeline]]

    async def close(self) -> None:
        for generation, _ in self.started:
            await generation.aclose()
        self.permit.release()


class Inference:
    def __init__(self, engine: Engine, tokenizer: TextTokenizer, settings: ServerSettings, metrics: Metrics) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.settings = settings
        self.metrics = metrics
        self.admission = Admission(
            settings.max_concurrent_requests, settings.max_concurrent_requests_per_key, settings.retry_after_seconds
        )
        self.limit = self.admission.total

    def _start(
        self, valid: ValidRequest, tier: str, targets: SloTargets | None
    ) -> tuple[GenerationHandle, TokenPipeline]:
        """Submit one generation (raises the scheduler's AdmissionError, EngineStopping or NoReplicaServing)."""
        request = GenerationRequest.of(
            valid.prompt_ids, valid.params, valid.max_new_tokens, tier, targets, valid.ignore_eos
        )
        generation = self.engine.submit(request)
        return generation, TokenPipeline(self.tokenizer, valid.prompt_ids, valid.stop)

    async def start_admitted(
        self, caller: Caller, valids: list[ValidRequest], tier: str, targets: SloTargets | None
    ) -> Admitted:
        """One permit and one started generation per entry of ``valids``, or none at all.

        Raises 429 beyond a concurrency limit before anything starts; if a
        submission fails (the scheduler's AdmissionError, EngineStopping), the
        generations already started are aborted and the permits given back.
        """
        try:
            admitted = Admitted(self.admission.acquire(caller, len(valids)), [])
        except ApiError:
            self.metrics.request_rejected(tier, "overloaded", len(valids))
            raise
        try:
            for valid in valids:
                admitted.started.append(self._start(valid, tier, targets))
        except BaseException as error:
            await admitted.close()
            reason = REFUSALS.get(type(error))
            if reason is not None:
                self.metrics.request_rejected(tier, reason, len(valids) - len(admitted.started))
            raise
        return admitted

    async def run(self, generation: GenerationHandle, pipeline: TokenPipeline) -> Sequence:
        events: list[TokenEvent] = []
        async for batch in token_batches(generation, pipeline):
            if batch:
                events += batch
        return Sequence(generation, pipeline, events)

    async def run_all(self, started: list[tuple[GenerationHandle, TokenPipeline]]) -> list[Sequence]:
        """Run started generations side by side to their end; the first failure stops them all."""
        runs = [asyncio.ensure_future(self.run(generation, pipeline)) for generation, pipeline in started]
        try:
            return list(await asyncio.gather(*runs))
        finally:
            for run in runs:
                run.cancel()  # one failed or the client left: stop the others too (their cleanup aborts them)
            await asyncio.gather(*runs, return_exceptions=True)

    def record_success(
        self, started: float, valid: ValidRequest, generation: GenerationHandle, generated: int
    ) -> dict[str, str]:
        """Count a finished request in /metrics; returns TGI's timing headers (milliseconds; compute time in s)."""
        now = time.monotonic()
        arrival = generation.request.arrival
        admitted = generation.admitted if generation.admitted is not None else arrival
        total, validation = now - started, arrival - started
        queue, inference = admitted - arrival, now - admitted
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
            "x-cached-tokens": str(generation.cached_tokens),  # extension: prompt tokens the prefix cache served
        }


SUMMED_MILLISECONDS = ("x-total-time", "x-validation-time", "x-queue-time", "x-inference-time", "x-time-per-token")
SUMMED_COUNTS = ("x-compute-characters", "x-prompt-tokens", "x-generated-tokens", "x-cached-tokens")


def summed_headers(parts: list[dict[str, str]]) -> dict[str, str]:
    """One answer's headers from its prompts' (TGI server.rs `completions`: each header summed over the prompts)."""
    headers = dict(parts[0])
    headers["x-compute-time"] = f"{sum(float(part['x-compute-time']) for part in parts):.6f}"
    for name in SUMMED_MILLISECONDS + SUMMED_COUNTS:
        headers[name] = str(sum(int(part[name]) for part in parts))
    return headers
