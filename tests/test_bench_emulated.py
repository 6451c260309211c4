"""`niyama bench emulated` end to end, tiny: real emulated servers, real probes, the simulator beside.

Two policies at one rate (a few seconds of arrivals) and a small stress
probe; the report must hold, for every probe, the real and the simulated
misses of the very same requests, and the router's own figures read from
/metrics. The crossing-rate arithmetic is checked on its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from niyama.bench import evaluate_emulated
from niyama.bench.emulated_report import crossing, ratio

TIERS = """default = "Q1"
[[tiers]]
name = "Q1"
kind = "interactive"
ttft = "6s"
tbt = "50ms"
importance = 3
[[tiers]]
name = "Q2"
kind = "batch"
ttlt = "20s"
importance = 2
[[tiers]]
name = "Q3"
kind = "batch"
ttlt = "30s"
importance = 1
"""


def test_crossing_interpolates_between_the_bracketing_probes():
    assert crossing([(10.0, 0.0), (12.0, 3.0), (8.0, 0.5)]) == {"rate": pytest.approx(10 + 2 / 3), "bound": None}
    assert crossing([(4.0, 0.0), (5.0, 1.0)]) == {"rate": 5.0, "bound": "above"}  # 1% is within the budget
    assert crossing([(4.0, 2.0), (5.0, 9.0)]) == {"rate": 4.0, "bound": "below"}


def test_ratio_is_a_bound_when_a_crossing_is_not_bracketed():
    exact, above, below = (
        {"rate": 6.0, "bound": None},
        {"rate": 15.0, "bound": "above"},
        {"rate": 3.0, "bound": "below"},
    )
    assert ratio(exact, {"rate": 3.0, "bound": None}) == {"value": 2.0, "bound": None}
    assert ratio(above, exact) == {"value": 2.5, "bound": ">"}
    assert ratio(below, exact) == {"value": 0.5, "bound": "<"}
    assert ratio(above, above)["value"] is None  # nothing known


def tiny_run(tmp_path, duration: float) -> list[str]:
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(TIERS)
    return ["--policies", "fcfs,niyama", "--goodput", "fcfs=3", "--goodput", "niyama=3", "--rate-factors", "1",
            "--duration", str(duration), "--tiers", str(tiers), "--drain-margin", "5", "--probe-gap", "0",
            "--stress-requests", "40", "--stress-window", "0.5", "--stress-output-tokens", "24",
            "--out", str(tmp_path / "out")]  # fmt: skip


def test_emulated_evaluation_end_to_end(tmp_path):
    out = tmp_path / "out"
    assert evaluate_emulated.main(tiny_run(tmp_path, 4)) == 0

    results = json.loads((out / "results.json").read_text())
    assert results["partial"] is False  # saved after each step as partial, then once more when done
    assert (out / "misses_vs_rate.png").stat().st_size > 0
    (step,) = results["steps"]
    assert set(step["probes"]) == {"fcfs", "niyama"}
    for policy, probe in step["probes"].items():
        assert probe["rate"] == 3.0
        real, sim = probe["real"], probe["sim"]
        assert real["requests"] == probe["planned_requests"] > 0
        # The simulator replayed exactly the requests the probe sent: same tiers, same counts.
        assert {t: e["requests"] for t, e in real["tiers"].items()} == {t: e["count"] for t, e in sim["tiers"].items()}
        # Light load on an A100: nothing misses, really or in simulation.
        assert real["misses"] == 0 and sim["violation_pct"] == 0.0, policy
        router = probe["router"]
        assert router["peak_streams"] >= 1 and router["tokens_per_s"] > 0
        assert router["loop_lag_samples"] > 0 and 0 < router["loop_lag_p99_ms"] < 1000
        assert router["schedule_samples"] > 0 and 0 < router["schedule_p99_ms"] < 1000
        assert router["mean_step_ms"] > 0 and sim["steps"] > 0
    stress = results["stress"]
    assert stress["completed"] == 40 and stress["router"]["peak_streams"] > 5  # 24 tokens at ~10 ms a step overlap
    assert 0 < stress["client"]["cpu_share"] < 1
    assert results["analysis"]["crossing"]["niyama"]["real"] == {"rate": 3.0, "bound": "above"}

    summary = (out / "summary.md").read_text()
    assert "| fcfs | 3.000 (--goodput) | 3.000 | > 3.00 | > 3.00 |" in summary
    assert "stress (niyama: 40 x 24 tokens in 0.5 s)" in summary
    assert results["config"]["command"].startswith("niyama bench emulated --policies fcfs,niyama")


def test_sigterm_mid_probe_stops_every_server(tmp_path, processes):
    marker = uuid.uuid4().hex  # inherited by every server the command starts
    log = tmp_path / "command.log"
    with log.open("w") as sink:
        bench = subprocess.Popen(
            [sys.executable, "-m", "niyama.router.cli", "bench", "emulated", *tiny_run(tmp_path, 60)],
            env={**os.environ, "NIYAMA_EMULATED_TEST": marker}, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "step 1" not in log.read_text():
            assert bench.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        servers = [pid for pid in processes.marked("NIYAMA_EMULATED_TEST", marker) if pid != bench.pid]
        assert len(servers) >= 2, servers  # two servers (and their workers) are running
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(60) == 128 + signal.SIGTERM
        left = processes.end(processes.marked("NIYAMA_EMULATED_TEST", marker), grace=2.0)
        assert not left, "left running:\n" + "\n".join(left)
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
            bench.wait(10)
