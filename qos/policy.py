"""Policies as settings of one scheduler core.

``fcfs``, ``edf`` and ``niyama`` differ only in these switches, so a baseline
is exactly the Niyama code path with the mechanisms turned off, and each
mechanism can be ablated alone (``make_scheduler("niyama", ..., relegation=False)``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

# Dynamic chunking's step sizes (total tokens): multiples of 128 up to 2048,
# then the reference implementation's 2552 ceiling.
CHUNK_SIZES = tuple(range(128, 2049, 128)) + (2552,)


@dataclass(frozen=True)
class PolicyConfig:
    name: str
    ordering: str = "deadline"  # "arrival" (FCFS) or "deadline" (EDF and Niyama)
    token_budget: int = 256  # tokens per step (decodes included) when chunking is fixed
    dynamic_chunking: bool = False
    hybrid_priority: bool = False
    relegation: bool = False
    selective_preemption: bool = False
    importance_preemption: bool = False  # KV-pressure victims: least important tier first
    chunk_sizes: tuple[int, ...] = CHUNK_SIZES
    safety_margin: float = 1.2  # predicted step time is multiplied by this before it must fit the slack
    low_kv_fraction: float = 0.1  # below this share of free blocks memory is "low"...
    low_kv_step_tokens: int = 512  # ...and steps are capped at this many tokens
    # A dynamic step may take at most this share of the tightest TTFT target, so that a request arriving
    # while it runs can still start in time (0: no guard). It binds where steps are slow against the
    # targets (a CPU, a big model), not on the reference A100 with its 6 s TTFT.
    arrival_guard: float = 0.25
    alpha: float = 0.008  # hybrid priority, seconds per remaining prompt token at full load
    hybrid_cap: float = 0.5  # ...but never more than this share of the request's own first-token budget
    adaptive_alpha: bool = True  # follow the load; False: always the full alpha (the reference's fixed 8 ms)
    alpha_levels: int = 4  # alpha moves in steps of alpha/levels (each change re-sorts the queues)
    relegation_window: int = 64  # queued requests examined per step for predicted misses
    kv_watermark: float = 0.01  # share of blocks a new admission must leave free
    max_running: int | None = 256  # decoding plus prefilling requests; None for no limit
    batch_seconds_per_token: float = 0.4  # decode pace assumed for batch tiers' first-token deadline
    prefill_rate_decay: float = 0.995  # exponential average of observed prefill tokens/s, per step
    initial_prefill_rate: float | None = None  # tokens/s; None: from the predictor's largest step

    def __post_init__(self) -> None:
        if self.ordering not in ("arrival", "deadline"):
            raise ValueError(f"ordering must be 'arrival' or 'deadline', got {self.ordering!r}")
        if self.token_budget < 1:
            raise ValueError(f"token budget must be at least 1, got {self.token_budget}")
        if not self.chunk_sizes or list(self.chunk_sizes) != sorted(set(self.chunk_sizes)) or self.chunk_sizes[0] < 1:
            raise ValueError(f"chunk sizes must be increasing positive integers, got {self.chunk_sizes}")
        if not 0 <= self.arrival_guard <= 1:
            raise ValueError(f"arrival guard must be within [0, 1], got {self.arrival_guard}")
        if self.safety_margin <= 0 or self.alpha < 0 or self.alpha_levels < 1 or self.relegation_window < 1:
            raise ValueError("safety margin must be > 0, alpha >= 0, alpha levels and relegation window >= 1")
        if not 0 <= self.prefill_rate_decay <= 1:
            raise ValueError(f"prefill rate decay must be within [0, 1], got {self.prefill_rate_decay}")
        if self.max_running is not None and self.max_running < 1:
            raise ValueError(f"max_running must be at least 1, got {self.max_running}")


NIYAMA_MECHANISMS = ("dynamic_chunking", "hybrid_priority", "relegation", "selective_preemption", "importance_preemption")

POLICIES: dict[str, dict[str, object]] = {
    "fcfs": {"ordering": "arrival"},
    "edf": {"ordering": "deadline"},
    "niyama": {"ordering": "deadline", **{mechanism: True for mechanism in NIYAMA_MECHANISMS}},
}


def policy_config(policy: str, **options: object) -> PolicyConfig:
    """The preset named ``policy`` with ``options`` (PolicyConfig fields) applied on top."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
    known = {f.name for f in fields(PolicyConfig)} - {"name"}
    for option in options:
        if option not in known:
            raise ValueError(f"unknown policy option {option!r}; known: {', '.join(sorted(known))}")
    return replace(PolicyConfig(policy, **POLICIES[policy]), **options)
