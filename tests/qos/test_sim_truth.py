"""The simulated device's truth: noise and bias in the step times, a predictor that learns them online."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from niyama.engine import simulate_cli
from niyama.engine.protocol import SamplingParams
from niyama.engine.report import summarize
from niyama.engine.request import GenerationRequest
from niyama.engine.simulator import SimSetup, make_cores, simulate
from niyama.engine.virtual import VirtualClock
from niyama.qos.config import builtin_tier_config
from niyama.qos.options import TruthConfig
from niyama.qos.traces import load_trace
from niyama.qos.workload import RatePhase, build_workload

PAPER = builtin_tier_config("paper")
REQUESTS = build_workload(load_trace("azure-code"), PAPER, (1 / 3,) * 3, (RatePhase(3.0, 120),), 120.0, 0, True)


def test_exact_truth_ignores_the_seed():
    base = SimSetup(PAPER)
    assert summarize(simulate(base, REQUESTS)) == summarize(simulate(replace(base, seed=5), REQUESTS))


def test_noise_is_seeded_and_changes_the_run():
    noisy = SimSetup(PAPER, truth=TruthConfig(noise=0.3))
    first = simulate(noisy, REQUESTS)
    assert summarize(first) == summarize(simulate(noisy, REQUESTS))
    assert first.end_time != simulate(replace(noisy, seed=1), REQUESTS).end_time
    assert first.end_time != simulate(SimSetup(PAPER), REQUESTS).end_time


def test_predictor_starts_nominal_and_learns_the_bias():
    setup = SimSetup(PAPER, truth=TruthConfig(bias=1.25))
    exact, slow = simulate(SimSetup(PAPER), REQUESTS), simulate(setup, REQUESTS)
    assert slow.tokens == exact.tokens and slow.end_time > exact.end_time
    core = make_cores(setup, VirtualClock())[0]
    assert core.scheduler.predictor.factors == (1.0, 1.0)  # the scheduler believes the nominal model...
    nominal = core.scheduler.predictor.predict_parts(256, 8, 4000, 256)
    assert core.worker.step_time(256, 8, 4000, 256) == pytest.approx(1.25 * nominal)
    for request in REQUESTS[:40]:
        core.add(GenerationRequest(request.id, request.tier, 0.0, request.prompt_len, request.max_new_tokens,
                                   None, (), SamplingParams(), True))  # fmt: skip
    while core.has_work:
        core.step()
    assert max(core.scheduler.predictor.factors) == pytest.approx(1.25, rel=0.02)  # ...and corrects it online


def test_replicas_draw_their_own_noise():
    setup = SimSetup(PAPER, truth=TruthConfig(noise=0.2), replicas=2)
    first, second = (core.worker.step_time for core in make_cores(setup, VirtualClock()))
    assert [first(100, 4, 800, 100) for _ in range(5)] != [second(100, 4, 800, 100) for _ in range(5)]


@pytest.mark.parametrize("mode", [[], ["--goodput"], ["--silo"]])
def test_cli_takes_the_truth_in_every_mode(capsys, mode):
    argv = ["--arrivals", "poisson", "--rate", "2", "--duration", "60", "--json"]
    argv += ["--truth-noise", "0.1", "--truth-bias", "1.25"]
    assert simulate_cli.main(argv + mode) == 0
    assert json.loads(capsys.readouterr().out)["config"]["truth"] == {"noise": 0.1, "bias": 1.25}
