"""An emulated device: a worker process with no model behind the real server (`niyama serve --emulate`).

The router, engine loop, scheduler and KV accounting are the real ones; only
the forward pass is replaced. Each step sleeps the time the truth model
(`Emulation.truth_model`: the nominal latency model times bias and noise)
gives its shape, and answers the elapsed time it measured, as a real worker
does, so the scheduler's predictor corrects itself against it as on a GPU.
Every chunk that samples gets one token, as on a real worker: filler text of
the served tokenizer, or EOS once a request reaches the output length drawn
for it from a trace (the engine ignores that EOS for ``ignore_eos``).

Nothing here imports torch or loads weights: the process reads the
tokenizer's folder (`tokenizers`, JSON) and starts in a second, so hundreds
of emulated streams cost the host almost nothing. Hosted as
``python -m niyama.worker.emulated FD`` by `engine.process.WorkerProcess`
over the same pipe as a model's worker (`pipe.py`).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from niyama.engine.protocol import (
    EMULATED_KV_TOKENS,
    Emulation,
    PlanError,
    SamplingParams,
    StepCall,
    StepTime,
    WorkerConfig,
    WorkerInfo,
)
from niyama.qos.plan import Plan, SampledToken, StepResult
from niyama.qos.traces import load_trace

from .loading import ModelLoadError, resolve_checkpoint
from .pipe import serve

FILLER = "The emulated device writes this filler text where a model would have written its answer. "
# What a built-in latency model stands for: its context and the dtype of its weights.
REFERENCE_DEVICES = {"a100-llama3-8b": (8192, "bfloat16")}



@dataclass(frozen=True)
class Vocabulary:
    """What the emulated worker needs of the served model's tokenizer, read from its folder without torch."""

    size: int
    eos_token_ids: frozenset[int]
    filler: tuple[int, ...]  # ids of ordinary text, handed out in turn
    max_context: int  # the checkpoint's own (used when the emulated model does not say)

    @classmethod
    def read(cls, folder: Path) -> Vocabulary:
        if not (folder / "tokenizer.json").is_file():
            raise ModelLoadError(f"an emulated device needs the served model's tokenizer.json; {folder} has none")
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config, generation = _json(folder / "config.json"), _json(folder / "generation_config.json")
        eos = generation.get("eos_token_id", config.get("eos_token_id"))
        ids = frozenset([] if eos is None else [eos] if isinstance(eos, int) else eos)
        filler = tuple(t for t in tokenizer.encode(FILLER, add_special_tokens=False).ids if t not in ids)
        context = int(config.get("max_position_embeddings") or _json(folder / "tokenizer_config.json").get(
            "model_max_length", 2048))  # fmt: skip
        return cls(tokenizer.get_vocab_size(with_added_tokens=True), ids, filler, context)


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


MAX_LATE = 0.25  # seconds of oversleep made up at most: a long host stall is not paid back as a burst


class EmulatedWorker:
    """The engine's `Worker` for an emulated device: sleeps each step's truth time, returns filler or EOS.

    A busy host wakes a sleeping process late; the device would not have
    been late, so the next steps sleep that much less (up to ``MAX_LATE``)
    and the emulated device keeps the truth's pace on average.
    """

    def __init__(
        self, step_time: StepTime, vocabulary: Vocabulary, outputs: tuple[int, ...], seed: int = 0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:  # fmt: skip
        self.step_time = step_time
        self.vocabulary = vocabulary
        self.outputs = outputs
        self.seed = seed
        self.sleep = sleep
        self.eos = min(vocabulary.eos_token_ids, default=None)
        self._ends: dict[str, int] = {}  # request id -> the output length drawn for it
        self._made: dict[str, int] = {}  # request id -> tokens it has produced
        self._late = 0.0  # seconds the host has overslept so far, not yet made up

    def output_length(self, request_id: str) -> int:
        """The length drawn for a request: the same for the same id and seed in every run (ids are req-N in order)."""
        return random.Random(f"{self.seed}:{request_id}").choice(self.outputs)

    def add_sequence(self, request_id: str, prompt_ids: tuple[int, ...], params: SamplingParams) -> None:
        self._ends[request_id] = self.output_length(request_id)
        self._made[request_id] = 0

    def remove_sequence(self, request_id: str) -> None:
        self._ends.pop(request_id, None)
        self._made.pop(request_id, None)

    def execute(self, plan: Plan, started: float | None = None) -> StepResult:
        """The step's tokens, after the truth's time for its shape has passed since ``started`` (default: now)."""
        started = time.perf_counter() if started is None else started
        shape = plan.shape
        seconds = self.step_time(shape.prefill_tokens, shape.decode_tokens, shape.decode_context, shape.prefill_context)
        tokens = tuple(SampledToken(c.request_id, self._next(c.request_id), 0.0) for c in plan.chunks if c.sample)
        remaining = started + seconds - self._late - time.perf_counter()
        if remaining > 0:
            self.sleep(remaining)
        elapsed = time.perf_counter() - started
        self._late = min(MAX_LATE, max(0.0, self._late + elapsed - seconds))
        return StepResult(tokens, elapsed)

    def _next(self, request_id: str) -> int:
        made = self._made.get(request_id)
        if made is None:
            raise PlanError(f"request {request_id!r} is not registered with this worker")
        self._made[request_id] = made + 1
        if made + 1 == self._ends[request_id] and self.eos is not None:
            return self.eos
        filler = self.vocabulary.filler
        return filler[made % len(filler)]


class EmulatedHost:
    """The worker process of an emulated device: the calls of `pipe.Host`."""

    def __init__(self, worker: EmulatedWorker, info: WorkerInfo) -> None:
        self.worker = worker
        self._info = info

    @classmethod
    def load(cls, config: WorkerConfig) -> EmulatedHost:
        emulation = config.emulation
        if emulation is None:
            raise ValueError("an emulated worker needs WorkerConfig.emulation")
        model_id, folder = resolve_checkpoint(config.model_id, config.revision)
        vocabulary = Vocabulary.read(folder)
        context, dtype = REFERENCE_DEVICES.get(emulation.latency_model) or _profiled(emulation, vocabulary)
        kv_tokens = config.kv_cache_tokens or EMULATED_KV_TOKENS
        outputs = load_trace(emulation.outputs).output_lens
        worker = EmulatedWorker(emulation.truth_model(), vocabulary, outputs, emulation.seed)
        info = WorkerInfo(
            model_id=model_id, checkpoint=folder.name, path=str(folder), device="emulated",
            device_name=f"emulated {Path(emulation.latency_model).stem}", dtype=dtype,
            num_blocks=kv_tokens // config.block_size, block_size=config.block_size, max_context=context,
            vocab_size=vocabulary.size, eos_token_ids=vocabulary.eos_token_ids, node="127.0.0.1", pid=os.getpid(),
        )  # fmt: skip
        return cls(worker, info)

    def info(self) -> WorkerInfo:
        return self._info

    def latency_profile(self) -> str:
        raise PlanError("an emulated device has no start-up profile: its latency model is the one --emulate names")

    def step(self, call: StepCall) -> StepResult:
        started = time.perf_counter()
        for request_id, prompt_ids, params in call.changes:
            if prompt_ids is None:
                self.worker.remove_sequence(request_id)
            else:
                self.worker.add_sequence(request_id, prompt_ids, params)
        return self.worker.execute(call.plan, started)


def _profiled(emulation: Emulation, vocabulary: Vocabulary) -> tuple[int, str]:
    """A profile's device: the served checkpoint's context, the dtype the profile was measured in."""
    return vocabulary.max_context, str(_json(Path(emulation.latency_model)).get("dtype", "unknown"))


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1]), EmulatedHost.load))
