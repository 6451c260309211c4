"""What crosses the boundary between the engine and a worker, as plain data.

The scheduler's `Plan` and the worker's `StepResult` are in `qos.plan` (the
scheduler makes one and reads the other); everything else a worker is given
or answers lives here: sampling parameters, what a worker loads, what it
reports once loaded, the `Worker` protocol and the errors a worker raises.
Nothing here imports torch, so the HTTP process, a Ray front process and the
simulator use these types without loading a model library.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from niyama.qos.options import TruthConfig
from niyama.qos.plan import Plan, StepResult, by_fields

from .grammar import GrammarSpec
from .truth import TruthModel


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """TGI's generation parameters that decide how a token is chosen (validated by the router)."""

    do_sample: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    typical_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    top_n_tokens: int = 0
    prompt_logprobs: bool = False
    grammar: GrammarSpec | None = None  # structured output: only tokens the grammar allows are sampled
    watermark: bool = False  # TGI's greenlist watermark
    logit_bias: tuple[tuple[int, float], ...] = ()  # OpenAI's logit_bias: (token id, bias added to its logit)

    @property
    def has_warpers(self) -> bool:
        return (
            (self.temperature is not None and self.temperature != 1.0)
            or bool(self.top_k)
            or (self.top_p is not None and self.top_p < 1.0)
            or (self.typical_p is not None and self.typical_p < 1.0)
        )

    @property
    def samples(self) -> bool:
        """As in TGI, any warper turns sampling on."""
        return self.do_sample or self.has_warpers


# A device's time for a step of this shape: (prefill tokens, decodes, decode context, prefill context) -> seconds.
StepTime = Callable[[int, int, int, int], float]

# A worker process writes each log record as one line on its stderr, `LEVEL logger: message`, each newline
# of the message written as LOG_NEWLINE; the server logs every such line again through its own handlers, so a
# worker's lines come out in the server's format (one JSON object each with --json-output).
WORKER_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
LOG_NEWLINE = "\x1e"

DTYPES = ("float32", "bfloat16", "float16", "float64")  # `--dtype` besides "auto"
# An emulated device's KV cache unless --kv-tokens says: an A100-80GB serving Llama-3-8B in bf16 (docs/serving.md).
EMULATED_KV_TOKENS = 400_000


@dataclass(frozen=True)
class Emulation:
    """An emulated device (`niyama serve --emulate`): a worker with no model, whose steps take the truth's time.

    The worker process builds its step time from this (`truth`), so the
    device's behaviour is decided by the server's flags and travels as data.
    """

    latency_model: str  # a reference model or a `niyama profile` JSON: the device's nominal step time
    truth: TruthConfig = TruthConfig()  # how the device departs from it (--truth-noise, --truth-bias)
    outputs: str = "azure-conv"  # the trace whose output lengths requests without ignore_eos follow
    seed: int = 0  # of the step-time noise and of the output-length draws

    def truth_model(self) -> TruthModel:
        return TruthModel.of(self.latency_model, self.truth, self.seed)

    def describe(self, device: str, kv_tokens: int) -> dict[str, object]:
        """/info's ``emulated`` object."""
        return {
            "device": device, "latency_model": self.latency_model, "truth": self.truth.model_dump(),
            "kv_tokens": kv_tokens, "outputs": self.outputs, "seed": self.seed,
        }  # fmt: skip


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker loads: the model options of `niyama serve`."""

    model_id: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    kv_cache_tokens: int | None = None  # None: a share of the free memory where the worker runs
    block_size: int = 16  # tokens per KV block
    threads: int | None = None  # torch CPU threads (replicas on one host split its cores)
    gpus: int = 1  # more than 1: the model is spread over that many GPUs of the host
    emulation: Emulation | None = None  # set: no model is loaded, `model_id` only names the tokenizer
    revision: str | None = None  # of a hub model: branch, tag or commit (None: main)
    trust_remote_code: bool = False  # run a hub model's own modelling code


@dataclass(frozen=True)
class WorkerInfo:
    """What the engine and the HTTP layer need to know about a loaded worker."""

    model_id: str
    checkpoint: str
    path: str
    device: str  # torch device type: "cuda" or "cpu", or "emulated" (the x-compute-type header)
    device_name: str
    dtype: str
    num_blocks: int
    block_size: int
    max_context: int
    vocab_size: int
    eos_token_ids: frozenset[int]
    node: str  # host address
    pid: int  # the worker's process

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size


class PlanError(ValueError):
    """A plan the worker cannot run as given (unknown request, missing blocks...)."""


class SequenceError(ValueError):
    """A request the worker cannot accept (empty prompt, beyond the model's context...)."""


class WorkerLost(RuntimeError):
    """The worker is gone (its process or node died), with every sequence and KV block it held."""


def check_prompt(prompt_ids: list[int] | tuple[int, ...], max_context: int, vocab_size: int) -> None:
    """Raise `SequenceError` for a prompt no step could run (checked before it is sent anywhere)."""
    if not prompt_ids:
        raise SequenceError("the prompt is empty")
    if len(prompt_ids) >= max_context:
        raise SequenceError(f"the prompt has {len(prompt_ids)} tokens; this model's context is {max_context} tokens")
    bad = next((t for t in prompt_ids if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise SequenceError(f"token id {bad} is outside the vocabulary (size {vocab_size})")


class Worker(Protocol):
    """One model replica's compute: registrations between steps, one `execute` per step.

    `add_sequence` and `remove_sequence` are called on the engine's loop
    between steps, `execute` on the engine's step thread; a worker never sees
    two calls at once.
    """

    def add_sequence(self, request_id: str, prompt_ids: tuple[int, ...], params: SamplingParams) -> None: ...

    def remove_sequence(self, request_id: str) -> None: ...

    def execute(self, plan: Plan) -> StepResult: ...


class WorkerStartError(RuntimeError):
    """The worker could not load its model or size its cache; the message is the worker's own."""


class StepFailed(RuntimeError):
    """A step raised inside a worker process; the message names the worker's own exception."""


# A registry change: (id, prompt, params) adds a request, (id, None, None) removes it.
Change = tuple[str, tuple[int, ...] | None, SamplingParams | None]


@dataclass(frozen=True, slots=True)
class StepCall:
    """One round trip to a worker process: its registry changes since the last step, in order, then the step.

    Block tables travel as deltas: ``tables[id] = (keep, new)`` means the
    request's table is its first ``keep`` blocks as the worker last had them,
    then ``new``; the plan itself goes with empty tables.
    """

    __reduce__ = by_fields

    changes: tuple[Change, ...]
    tables: dict[str, tuple[int, tuple[int, ...]]]
    plan: Plan
