"""Policies as settings of one scheduler core.

``fcfs``, ``edf`` and ``niyama`` differ only in these switches, so a baseline
is exactly the Niyama code path with the mechanisms turned off, and each
mechanism can be ablated alone (``make_scheduler("niyama", ..., relegation=False)``).

``PolicyConfig`` is a frozen pydantic model: its fields are the scheduling
knobs that ``niyama serve``, ``niyama simulate`` and a run file share
(``qos/options.py``), each with its flag ``--field-name``. Its attribute reads
are plain instance attributes, as fast as a dataclass's, for the scheduler's
hot loops. Invalid values raise a one-line ``ValueError`` naming the knob.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from .deadlines import BATCH_SECONDS_PER_TOKEN

# Dynamic chunking's step sizes (total tokens): multiples of 128 up to 2048,
# then the reference implementation's 2552 ceiling.
CHUNK_SIZES = tuple(range(128, 2049, 128)) + (2552,)


def _unit_interval(value: float) -> float:
    if not 0 <= value <= 1:
        raise ValueError(f"must be within [0, 1], got {value!r}")
    return value


def _increasing(sizes: tuple[int, ...]) -> tuple[int, ...]:
    if not sizes or list(sizes) != sorted(set(sizes)) or sizes[0] < 1:
        raise ValueError(f"must be increasing positive integers, got {sizes}")
    return sizes


def _none_or(value: Any) -> Any:
    """TOML has no null and a flag has no None: the string "none" stands for it."""
    return None if isinstance(value, str) and value.strip().lower() == "none" else value


def _comma_list(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if not isinstance(value, str):
        return value
    try:
        return tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"must be comma-separated integers, got {value!r}") from None


Share = Annotated[float, AfterValidator(_unit_interval)]
Positive = Annotated[float, Field(gt=0)]


class PolicyConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    ordering: Literal["arrival", "deadline"] = Field("deadline", description="arrival (FCFS) or deadline (EDF, Niyama)")
    token_budget: int = Field(256, ge=1, description="tokens per step (decodes included) with fixed chunking")
    dynamic_chunking: bool = Field(False, description="size each step from the decodes' slack")
    hybrid_priority: bool = Field(False, description="deadline plus alpha x remaining prompt tokens")
    relegation: bool = Field(False, description="move requests predicted to miss behind the others")
    selective_preemption: bool = Field(False, description="pause a partial prefill only when that costs nothing")
    importance_preemption: bool = Field(False, description="KV-pressure victims: least important tier first")
    chunk_sizes: Annotated[tuple[int, ...], BeforeValidator(_comma_list), AfterValidator(_increasing)] = Field(
        CHUNK_SIZES, description="dynamic chunking's step sizes in tokens, comma-separated"
    )
    safety_margin: Positive = Field(1.2, description="predicted step time x this must fit the slack")
    low_kv_fraction: Share = Field(0.1, description="below this share of free KV blocks memory is low...")
    low_kv_step_tokens: int = Field(512, ge=1, description="...and steps are capped at this many tokens")
    # A dynamic step may take at most this share of the tightest TTFT target, so that a request arriving
    # while it runs can still start in time (0: no guard). It binds where steps are slow against the
    # targets (a CPU, a big model), not on the reference A100 with its 6 s TTFT.
    arrival_guard: Share = Field(0.25, description="a dynamic step takes at most this share of the tightest TTFT")
    alpha: float = Field(0.008, ge=0, description="hybrid priority: seconds per remaining prompt token at full load")
    hybrid_cap: float = Field(0.5, ge=0, description="...at most this share of the request's first-token budget")
    adaptive_alpha: bool = Field(True, description="alpha follows the load (off: always the full alpha)")
    alpha_levels: int = Field(4, ge=1, description="alpha moves in steps of alpha/levels (each re-sorts the queues)")
    relegation_window: int = Field(64, ge=1, description="queued requests examined per step for predicted misses")
    prefix_caching: bool = Field(True, description="start requests from the cached KV of a shared prefix")
    prefix_retention_seconds: float = Field(
        60.0, ge=0, description="a cached block outlives plain LRU by this per unit of its tiers' importance"
    )
    kv_watermark: Share = Field(0.01, description="share of KV blocks a new admission must leave free")
    max_running: Annotated[Annotated[int, Field(ge=1)] | None, BeforeValidator(_none_or)] = Field(
        256, description="decoding plus prefilling requests; none: no limit"
    )
    batch_seconds_per_token: Positive = Field(
        BATCH_SECONDS_PER_TOKEN, description="decode pace assumed for a batch tier's first-token deadline"
    )
    prefill_rate_decay: Share = Field(0.995, description="per-step decay of the observed prefill rate's average")
    initial_prefill_rate: Annotated[Annotated[float, Field(gt=0)] | None, BeforeValidator(_none_or)] = Field(
        None, description="prefill tokens/s to start from; none: the latency model's largest step"
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise option_error(error) from None


KNOBS = tuple(name for name in PolicyConfig.model_fields if name != "name")
NIYAMA_MECHANISMS = (
    "dynamic_chunking",
    "hybrid_priority",
    "relegation",
    "selective_preemption",
    "importance_preemption",
)

POLICIES: dict[str, dict[str, object]] = {
    "fcfs": {"ordering": "arrival"},
    "edf": {"ordering": "deadline"},
    "niyama": {"ordering": "deadline", **{mechanism: True for mechanism in NIYAMA_MECHANISMS}},
}


def policy_config(policy: str, **options: object) -> PolicyConfig:
    """The preset named ``policy`` with ``options`` (PolicyConfig fields) applied on top."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
    for option in options:
        if option not in KNOBS:
            raise ValueError(f"unknown policy option {option!r}; known: {', '.join(sorted(KNOBS))}")
    return PolicyConfig(name=policy, **{**POLICIES[policy], **options})


def policy_overrides(config: PolicyConfig) -> dict[str, object]:
    """The knobs of ``config`` that differ from its preset (all of them for a name that is no preset)."""
    preset = policy_config(config.name) if config.name in POLICIES else None
    return {
        name: getattr(config, name)
        for name in KNOBS
        if preset is None or getattr(config, name) != getattr(preset, name)
    }


class OptionError(ValueError):
    """An invalid configuration value: ``field`` (dotted for nested tables) and the ``problem`` with it.

    The message reads "token budget must be at least 1, got 0"; callers that know where the value came
    from (a flag, a run file) word it their way from ``field`` and ``problem``.
    """

    def __init__(self, field: str, problem: str, message: str | None = None) -> None:
        super().__init__(message or f"{field.replace('_', ' ')} {problem}")
        self.field, self.problem = field, problem


def option_error(error: ValidationError, what: str = "policy option", known: tuple[str, ...] = KNOBS) -> OptionError:
    """The first problem of a pydantic ``error``, as an ``OptionError``."""
    detail = error.errors(include_url=False)[0]
    field = ".".join(str(part) for part in detail["loc"] if isinstance(part, str))
    if detail["type"] == "extra_forbidden":
        return OptionError(field, "is unknown", f"unknown {what} {field!r}; known: {', '.join(sorted(known))}")
    return OptionError(field, value_problem(detail))


def value_problem(detail: ErrorDetails) -> str:
    """What pydantic found wrong with one value, worded as the rest of qos words it."""
    kind, ctx, value = detail["type"], detail.get("ctx", {}), detail.get("input")
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "missing":
        return "is required"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        words = {"greater_than_equal": "at least", "greater_than": "greater than", "less_than_equal": "at most"}
        return f"must be {words.get(kind, 'less than')} {next(iter(ctx.values())):g}, got {value!r}"
    if kind == "literal_error":
        return f"must be {ctx['expected']}, got {value!r}"
    expected = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a string"}
    for prefix, words in expected.items():
        if kind.startswith(prefix):
            return f"must be {words}, got {value!r}"
    return f"{detail['msg'][0].lower()}{detail['msg'][1:]}, got {value!r}"
