"""One measured run at one rate (or rate schedule): workload, prompts, load, summary.

``Scenario`` holds everything a run needs except the rate, so a goodput
search, a single run and the evaluation's side-by-side comparisons all call
``run_probe`` the same way. Runs at different rates draw the same sequence
of lengths and tiers for the same seed, so their prompts come from the cache.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tqdm import tqdm

from niyama.engine.capacity import Probe
from niyama.qos.arrivals import ArrivalProcess
from niyama.qos.config import TierConfig
from niyama.qos.traces import Trace
from niyama.qos.workload import RatePhase

from .accounting import summarize
from .client import Record, Target
from .goodput import miss_budget
from .prompt_text import PromptBuilder
from .runner import RunResult, run_requests
from .workload import BenchRequest, LengthScaling, build_requests


@dataclass
class Scenario:
    trace: Trace
    tiers: TierConfig
    mix: tuple[float, ...]
    arrivals: str  # poisson | gamma | trace
    burstiness: float
    duration: float
    seed: int
    scaling: LengthScaling
    targets: Mapping[str, Target]  # tier -> where its requests go
    builder: PromptBuilder
    max_requests: int | None = None
    drain_timeout: float = 120.0
    request_timeout: float = 600.0
    progress: bool = True
    extra: dict = field(default_factory=dict)  # free-form config echoed into results

    def requests(self, phases: Sequence[RatePhase]) -> list[BenchRequest]:
        process = ArrivalProcess(self.arrivals, tuple(phases), self.burstiness)
        return build_requests(
            self.trace, self.tiers, self.mix, process, self.duration, self.seed, self.scaling, self.max_requests
        )


@dataclass
class ProbeResult:
    label: str
    rate: float | None  # None for a rate schedule
    requests: int  # planned
    run: RunResult
    summary: dict

    @property
    def misses(self) -> int:
        """Misses among the sent requests; a probe stopped early had more than its budget."""
        return self.summary["misses"]

    @property
    def ok(self) -> bool:
        """At most 1% of the planned requests missed (a probe stopped early never is)."""
        return not self.run.stopped_early and self.misses <= miss_budget(self.requests)

    def as_probe(self) -> Probe:
        """The goodput search's view (a probe stopped early has more misses than its budget)."""
        return Probe(self.rate or 0.0, self.requests, self.misses)

    def to_json(self) -> dict:
        return {
            "label": self.label,
            "rate": self.rate,
            "planned_requests": self.requests,
            "miss_budget": miss_budget(self.requests),
            "ok": self.ok,
            "stopped_early": self.run.stopped_early,
            "max_send_lag_s": round(self.run.max_send_lag, 4),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "summary": self.summary,
            "records": [record_json(r, self.run.started) for r in self.run.records],
        }


def record_json(record: Record, started: float) -> dict:
    """One request, times in seconds: its send after the run's start, its tokens after its send."""
    sent = record.sent or started
    return {
        "index": record.request.index,
        "tier": record.request.tier,
        "url": record.url,
        "scheduled_s": round(record.request.arrival, 4),
        "sent_s": round(sent - started, 4),
        "prompt_tokens": record.prompt_tokens,
        "prompt_tokens_trace_scaled": record.request.prompt_tokens,
        "max_tokens": record.request.output_tokens,
        "token_s": [round(t - sent, 4) for t in record.token_times],
        "reported_tokens": record.reported_tokens,
        "finish_reason": record.finish_reason,
        "error": record.error,
    }


async def run_probe(
    scenario: Scenario, phases: Sequence[RatePhase], label: str, stop_over_budget: bool = False
) -> ProbeResult:
    """Run ``scenario`` at ``phases``; with ``stop_over_budget`` stop once over 1% certain misses."""
    requests = scenario.requests(phases)
    if not requests:
        raise ValueError(f"{label}: no request arrives within {scenario.duration} s; raise --rate or --duration")
    rate = phases[0].rate if len(phases) == 1 else None
    return await measure(scenario, requests, label, rate, stop_over_budget)


async def measure(
    scenario: Scenario, requests: Sequence[BenchRequest], label: str, rate: float | None, stop_over_budget: bool
) -> ProbeResult:
    """Send ``requests`` (made by ``scenario`` or any other way) with ``scenario``'s prompts, targets and limits."""
    prompts = await scenario.builder.build_all([(r.index, r.prompt_tokens) for r in requests])
    budget = miss_budget(len(requests)) if stop_over_budget else None
    with tqdm(total=len(requests), desc=label, unit="req", file=sys.stderr, disable=not scenario.progress,
              leave=False, dynamic_ncols=True) as bar:  # fmt: skip

        def done(record: Record, misses: int) -> None:
            bar.update()
            bar.set_postfix(misses=misses, refresh=False)

        run = await run_requests(
            requests, prompts, scenario.targets, scenario.tiers, scenario.drain_timeout,
            scenario.request_timeout, budget, done,
        )  # fmt: skip
    summary = summarize(run.records, scenario.tiers, run.wall_seconds)
    return ProbeResult(label, rate, len(requests), run, summary)
