"""What to send and when: arrivals, each with a tier and the trace's lengths, scaled to fit.

A bench request carries token counts only; the prompt text is made later
(``prompt_text``), when the target server's tokenizer is at hand. Arrivals,
lengths and tiers are the simulator's own draw
(``niyama.qos.workload.draw_requests``), so with the same seed and no length
scaling the bench sends the requests that ``niyama simulate`` replays, and
``sim_requests`` turns a bench run's requests back into the simulator's.

Length scaling exists because real traces are sized for GPUs: Azure's
conversation trace has 1155-token prompts on average, which a CPU prefills
in seconds. ``LengthScaling`` multiplies prompt and output lengths (each by
its own factor), rounds, keeps at least one token, applies the caps, and
finally trims the prompt so prompt plus output fits the server's context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from niyama.qos.arrivals import ArrivalProcess
from niyama.qos.config import TierConfig
from niyama.qos.request import Request
from niyama.qos.traces import Trace
from niyama.qos.workload import draw_requests


@dataclass(frozen=True, slots=True)
class LengthScaling:
    prompt_factor: float = 1.0
    output_factor: float = 1.0
    max_prompt: int | None = None
    max_output: int | None = None
    max_total: int | None = None  # the server's max_total_tokens (prompt + output)

    def __post_init__(self) -> None:
        if not (self.prompt_factor > 0 and self.output_factor > 0):
            raise ValueError(f"length scale factors must be positive, got {self.prompt_factor}, {self.output_factor}")
        for name in ("max_prompt", "max_output"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name.replace('_', ' ')} tokens must be at least 1, got {value}")
        if self.max_total is not None and self.max_total < 2:
            raise ValueError(f"max total tokens must be at least 2, got {self.max_total}")

    def apply(self, prompt: int, output: int) -> tuple[int, int]:
        prompt = max(1, round(prompt * self.prompt_factor))
        output = max(1, round(output * self.output_factor))
        if self.max_prompt is not None:
            prompt = min(prompt, self.max_prompt)
        if self.max_output is not None:
            output = min(output, self.max_output)
        if self.max_total is not None:
            output = min(output, self.max_total - 1)
            prompt = min(prompt, self.max_total - output)
        return prompt, output


def parse_scaling(text: str) -> tuple[float, float]:
    """``"0.125"`` scales prompts and outputs alike; ``"0.125,0.5"`` gives each its own factor."""
    parts = text.split(",")
    try:
        factors = [float(part) for part in parts]
    except ValueError:
        raise ValueError(f"--scale-lengths takes F or PROMPT_F,OUTPUT_F, got {text!r}") from None
    if len(factors) not in (1, 2) or not all(f > 0 for f in factors):
        raise ValueError(f"--scale-lengths takes one or two positive factors, got {text!r}")
    return factors[0], factors[-1]


@dataclass(frozen=True, slots=True)
class BenchRequest:
    index: int
    tier: str
    arrival: float  # seconds after the start of the run
    prompt_tokens: int
    output_tokens: int  # asked for as max new tokens (with ignore_eos, also what should come back)


def build_requests(
    trace: Trace,
    tiers: TierConfig,
    mix: Sequence[float],
    process: ArrivalProcess,
    duration: float,
    seed: int,
    scaling: LengthScaling,
    max_requests: int | None = None,
) -> list[BenchRequest]:
    """The requests of one run, in arrival order: the simulator's (same seed), lengths scaled."""
    drawn = draw_requests(trace, tiers, mix, process, duration, seed, max_requests)
    return [
        BenchRequest(index, r.tier, r.arrival, *scaling.apply(r.prompt_len, r.max_new_tokens))
        for index, r in enumerate(drawn)
    ]


def sim_requests(requests: Sequence[BenchRequest]) -> list[Request]:
    """The simulator's view of bench requests (``r{index}``, tier, arrival, lengths): to replay what a run sent."""
    return [Request(f"r{r.index}", r.tier, r.arrival, r.prompt_tokens, r.output_tokens) for r in requests]


def merge(*streams: Sequence[BenchRequest]) -> list[BenchRequest]:
    """Several request streams (say, a steady interactive stream and a batch flood) as one, renumbered."""
    ordered = sorted((r for stream in streams for r in stream), key=lambda r: r.arrival)
    return [BenchRequest(i, r.tier, r.arrival, r.prompt_tokens, r.output_tokens) for i, r in enumerate(ordered)]
