"""Goodput search: the stepwise search matches the simulator's, and finds a fake server's ceiling."""

from __future__ import annotations

import json

import pytest
from bench_fake import FakeServer, ThreadedFake

from niyama.bench.goodput import GoodputSearch, miss_budget
from niyama.bench.serve_cli import main
from niyama.engine.capacity import Probe, goodput


def drive(search: GoodputSearch, capacity: float) -> list[float]:
    rates = []
    while (rate := search.next_rate()) is not None:
        rates.append(rate)
        search.record(Probe(rate, 200, 0 if rate <= capacity else 50))
    return rates


@pytest.mark.parametrize("start,capacity", [(1.0, 3.3), (8.0, 0.7), (2.0, 2.0), (1.0, 100.0)])
def test_stepwise_search_probes_exactly_what_the_simulators_search_probes(start, capacity):
    seen = []

    def run(rate: float) -> Probe:
        seen.append(rate)
        return Probe(rate, 200, 0 if rate <= capacity else 50)

    expected, _ = goodput(run, start, precision=0.05)
    search = GoodputSearch(start, precision=0.05, max_probes=100)
    assert drive(search, capacity) == pytest.approx(seen)
    assert search.goodput == pytest.approx(expected) and search.bracketed
    assert search.goodput <= capacity < search.goodput * 1.05 + 1e-9


def test_the_probe_limit_bounds_the_search_and_the_answer_is_what_was_proved():
    search = GoodputSearch(1.0, precision=0.01, max_probes=3)
    assert drive(search, capacity=100.0) == [1.0, 2.0, 4.0]
    assert search.goodput == 4.0 and not search.bracketed
    nothing = GoodputSearch(1.0, max_probes=4)
    drive(nothing, capacity=0.0)
    assert nothing.goodput == 0.0


def test_miss_budget_is_one_percent_rounded_down():
    assert [miss_budget(n) for n in (0, 99, 100, 250)] == [0, 0, 1, 2]
    assert Probe(1.0, 250, 2).ok and not Probe(1.0, 250, 3).ok


def test_goodput_against_a_fake_server_with_a_known_ceiling(tmp_path):
    # The fake fails any request that comes when more than 5 came within the last second. Near-regular
    # arrivals (gamma shape 400) at 2 and 4 req/s stay under it, 8 req/s does not.
    with ThreadedFake(FakeServer(capacity=5)) as fake:
        code = main([
            "--url", fake.url, "--trace", "sharegpt", "--scale-lengths", "0.02", "--max-output-tokens", "3",
            "--arrivals", "gamma", "--burstiness", "400", "--rate", "2", "--duration", "3", "--goodput",
            "--goodput-precision", "0.5", "--max-probes", "5", "--out", str(tmp_path), "--no-progress",
        ])  # fmt: skip
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    rates = [run["rate"] for run in results["runs"]]
    assert rates[:3] == pytest.approx([2.0, 4.0, 8.0])
    assert [run["ok"] for run in results["runs"][:3]] == [True, True, False]
    assert 4.0 <= results["goodput"]["rps"] < 8.0 and results["goodput"]["bracketed"]
    assert results["runs"][2]["stopped_early"]
    for name in ("summary.md", "latency_cdf.png", "attainment.png"):
        assert (tmp_path / name).stat().st_size > 0
