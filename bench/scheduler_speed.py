"""How long one `schedule()` call takes with a deep queue, and how fast the simulator runs.

1. Steady state: 256 requests running and 10,000 waiting (new requests
   arrive as others finish, so both stay put), Niyama policy, reference
   latency model. Every `schedule()` call is timed; we report the mean and
   p99 (target <= 1 ms per call on the 2-core development machine).
2. One hour of `azure-conv` (its own timestamps and rate) simulated with
   Niyama: wall time (target < 60 s).

Run: .venv/bin/python -m niyama.bench.scheduler_speed [--steps N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from niyama.engine.simulator import SimSetup, simulate
from niyama.qos.config import builtin_tier_config
from niyama.qos.kv_blocks import BlockAllocator
from niyama.qos.plan import StepResult
from niyama.qos.predictor import LatencyPredictor
from niyama.qos.request import Request
from niyama.qos.scheduler import make_scheduler
from niyama.qos.traces import load_trace
from niyama.qos.workload import RatePhase, build_workload

RUNNING = 256
WAITING = 10_000


def schedule_timings(policy: str, steps: int, seed: int = 0) -> tuple[list[float], dict]:
    """Time ``steps`` calls once 256 long-running decodes and 10,000 queued requests are in place.

    The running requests generate thousands of tokens so they stay; queued
    requests are short-output, so the ones a step admits leave soon and are
    replaced by new arrivals: the queue stays at 10,000 and each step has
    prefill work to choose (when the policy's budget leaves room for it).
    """
    tiers = builtin_tier_config("paper")
    rng = random.Random(seed)
    allocator = BlockAllocator(4_000_000 // 16, 16)
    predictor = LatencyPredictor.reference("a100-llama3-8b")
    scheduler = make_scheduler(policy, tiers, allocator, predictor, max_running=None)
    now = 0.0
    counter = 0

    def arrive(prompt: int, new_tokens: int, arrival: float) -> None:
        nonlocal counter
        tier = tiers.names[counter % len(tiers.names)]
        scheduler.add(Request(f"r{counter}", tier, arrival, prompt, new_tokens), now)
        counter += 1

    def step() -> float:
        nonlocal now
        start = time.perf_counter()
        plan = scheduler.schedule(now)
        elapsed = time.perf_counter() - start
        now += plan.predicted_seconds
        for _ in scheduler.on_step(StepResult((), plan.predicted_seconds), now):
            arrive(rng.randint(64, 2048), rng.randint(1, 4), now)
        return elapsed

    for _ in range(RUNNING):
        arrive(rng.randint(32, 128), 12_000, 0.0)
    while scheduler.stats().running < RUNNING:
        step()
    for _ in range(WAITING):
        arrive(rng.randint(64, 2048), rng.randint(1, 4), now + rng.uniform(0, 1))
    timings = [step() for _ in range(steps)]
    stats = scheduler.stats()
    return timings, {"running": stats.running, "prefilling": stats.prefilling, "queued": stats.queued}


def simulation_speed(trace_name: str = "azure-conv", seconds: float = 3600.0) -> tuple[float, int, float]:
    tiers = builtin_tier_config("paper")
    trace = load_trace(trace_name)
    requests = build_workload(trace, tiers, (1 / 3,) * 3, (RatePhase(trace.native_rate, seconds),), seconds, 0)
    start = time.perf_counter()
    result = simulate(SimSetup(tiers), requests)
    return time.perf_counter() - start, len(requests), result.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    print(f"schedule() with {RUNNING} running and {WAITING} waiting requests, {args.steps} calls each")
    for policy in ("fcfs", "edf", "niyama"):
        timings, state = schedule_timings(policy, args.steps)
        timings.sort()
        mean = statistics.fmean(timings) * 1e3
        p99 = timings[int(0.99 * (len(timings) - 1))] * 1e3
        print(f"  {policy:<7} mean {mean:.3f} ms  p99 {p99:.3f} ms  (end state {state})")
    wall, count, steps = simulation_speed()
    print(f"simulation: one hour of azure-conv ({count} requests, {steps} steps, niyama) in {wall:.1f} s wall")


if __name__ == "__main__":
    main()
