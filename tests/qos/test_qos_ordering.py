"""The claim the scheduler exists for, in the simulator: niyama misses fewer requests than EDF, EDF fewer than FCFS."""

from __future__ import annotations

from niyama.engine.simulator import SimSetup, simulate
from niyama.qos.config import builtin_tier_config
from niyama.qos.policy import policy_config
from niyama.qos.traces import load_trace
from niyama.qos.workload import RatePhase, build_workload

PAPER = builtin_tier_config("paper")
# Near EDF's goodput (8.8 req/s with 600 s probes; FCFS 2.6, niyama 12.1: `niyama simulate --trace azure-code
# --arrivals poisson --duration 600 --goodput --policy P`), so EDF already misses while niyama should not. 300 s of
# arrivals (about 2,850 requests, ~3 s of CPU for the three policies) is long enough for queues to build. At 9.5 req/s
# the ordering held for every seed from 0 to 11 (seed 3: niyama 0, edf 214, fcfs 926 misses). Niyama's Q1 misses were
# 0 for 8 of those 12 seeds; in the other four (1, 5, 6, 8) eager relegation gave up 2 to 7 Q1 requests caught in a
# burst, so "Q1 never misses" is a property of this workload, not a guarantee at this rate.
RATE, DURATION, SEED = 9.5, 300.0, 3


def test_niyama_misses_fewer_than_edf_and_edf_fewer_than_fcfs():
    requests = build_workload(load_trace("azure-code"), PAPER, (1 / 3,) * 3, (RatePhase(RATE, DURATION),), DURATION,
                              SEED, poisson=True)  # fmt: skip
    results = {
        policy: simulate(SimSetup(PAPER, policy_config(policy)), requests) for policy in ("niyama", "edf", "fcfs")
    }
    misses = {policy: result.misses for policy, result in results.items()}
    assert misses["niyama"] < misses["edf"] < misses["fcfs"], misses
    assert misses["edf"] > 0.01 * len(requests)  # the rate is past EDF's goodput: a real comparison, not 0 < 0
    assert not any(outcome.missed for outcome in results["niyama"].tiers["Q1"].outcomes)
    assert results["niyama"].tiers["Q1"].rejected == 0
