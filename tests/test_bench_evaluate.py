"""The evaluation's plumbing: server processes pinned and always stopped, and its report from results alone."""

from __future__ import annotations

import shutil
import sys

import pytest

from niyama.bench.evaluate_report import common_rate_runs, write_report
from niyama.bench.servers import ServerGroup, ServerSpec, command
from niyama.qos.config import builtin_tier_config


def test_a_silo_server_is_pinned_to_its_cores_with_as_many_threads():
    argv, env = command(ServerSpec("silo", ["--policy", "edf"], cores=[1]), 8123)
    assert env["OMP_NUM_THREADS"] == "1" and env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert argv[-6:] == ["--hostname", "127.0.0.1", "--port", "8123", "--policy", "edf"]
    if shutil.which("taskset"):
        assert argv[:3] == ["taskset", "-c", "1"] and argv[3] == sys.executable
    shared, env = command(ServerSpec("shared", []), 8124)
    assert shared[0] == sys.executable and env["OMP_WAIT_POLICY"] == "PASSIVE"


def test_a_server_that_fails_to_start_stops_the_group(tmp_path):
    good = ServerSpec("never-started", [])
    bad = ServerSpec("bad", ["--qos-config", str(tmp_path / "missing.toml")])
    group = ServerGroup([bad, good], tmp_path / "logs")
    with pytest.raises(RuntimeError, match="server bad exited with 2"):
        group.__enter__()
    assert group.servers == {}
    assert "cannot read tier file" in (tmp_path / "logs" / "bad.log").read_text()


def run(label: str, rate: float, ok: bool, ttfts: list[float]) -> dict:
    records = [{"tier": "interactive", "error": None, "token_s": [t, t + 0.1, t + 0.3]} for t in ttfts]
    records.append({"tier": "batch", "error": None, "token_s": [1.0, 5.0]})
    tier = {"targets": {"ttft": 2.0, "tbt": 0.2}, "requests": len(ttfts), "completed": len(ttfts), "misses": 0,
            "failed": 0, "attainment_pct": 100.0, "tbt_violation_pct": 0.0, "errors": {}, "output_length_ratio": 1.0,
            **{k: {"p50": 0.1, "p99": max(ttfts)} for k in ("ttft", "tbt", "ttlt")}}  # fmt: skip
    batch = {**tier, "targets": {"ttlt": 3600.0}, "requests": 1, "completed": 1}
    summary = {"tiers": {"interactive": tier, "batch": batch}, "requests": len(ttfts) + 1, "completed": len(ttfts) + 1,
               "misses": 0, "violation_pct": 0.0, "attainment_pct": 100.0, "throughput_rps": rate,
               "output_tokens_per_s": 3.0, "wall_seconds": 10.0}  # fmt: skip
    server = {"load_average_1m": 2.5, "mean_step_s": 0.1, "predictor_error": 0.2, "relegations": 0, "steps": 10}
    return {"label": label, "rate": rate, "planned_requests": len(ttfts) + 1, "ok": ok, "stopped_early": not ok,
            "summary": summary, "records": records, "server": server}  # fmt: skip


def one_run(seed: int, niyama: float, fcfs: float, flood_ttft: float) -> dict:
    return {
        "seed": seed,
        "goodput": {
            "niyama": {"rps": niyama, "bracketed": True,
                       "probes": [run("a", 0.5, True, [0.3]), run("b", 1, True, [0.4])]},
            "fcfs": {"rps": fcfs, "bracketed": True,
                     "probes": [run("c", 0.5, True, [0.5]), run("d", 1, False, [3.0])]},
        },
        "flood": {"niyama": run("niyama flood", None, True, [0.2, flood_ttft])},
    }  # fmt: skip


def test_the_report_gives_the_median_and_range_of_the_runs(tmp_path):
    results = {
        "config": {"command": "python -m niyama.bench.evaluate_qos", "wall_seconds": 600.0, "cpu_count": 2,
                   "step_cap": 256, "duration": 300.0},
        "runs": [one_run(0, 1.0, 0.5, 1.5), one_run(1, 0.8, 0.8, 2.5), one_run(2, 1.2, 0.2, 0.9)],
    }  # fmt: skip
    write_report(results, builtin_tier_config("default"), tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert "| niyama | 1.000 (0.800-1.200, 3 runs) | 0: 1.000, 1: 0.800, 2: 1.200 | 3/3 runs |" in summary
    assert "- niyama / fcfs: 2.00 (1.00-6.00, 3 runs), per run" in summary  # ratios per run: 2, 1, 6
    assert "| niyama | 1.50 (0.90-2.50, 3 runs) |" in summary  # the flood's interactive TTFT p99
    assert "every server with 256-token steps; probes of 300.0 s" in summary
    assert "| d | 1 | 2 | 0 | 0.000 | no | 1 | stopped early: over the miss budget, 0 undecided |" in summary
    for name in ("attainment_vs_rate.png", "flood_latency_cdf.png", "probe_latency_cdf.png"):
        assert (tmp_path / name).stat().st_size > 0
    first = results["runs"][0]["goodput"]
    assert [r["label"] for r in common_rate_runs(first)] == ["niyama", "fcfs"]
    assert common_rate_runs(first)[0]["rate"] == 1.0


def test_a_baseline_that_passed_no_rate_is_left_out_of_the_ratios_and_said_so(tmp_path):
    results = {"config": {"command": "x", "wall_seconds": 60.0, "cpu_count": 2},
               "runs": [one_run(0, 1.0, 0.0, 1.0), one_run(1, 1.0, 0.5, 1.0)]}  # fmt: skip
    write_report(results, builtin_tier_config("default"), tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert "- niyama / fcfs: 2.00 (1 run), per run; 1 run(s) left out: fcfs passed no rate" in summary
