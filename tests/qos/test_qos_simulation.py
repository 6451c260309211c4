"""Traces, workloads, the simulator, capacity searches and the `niyama simulate` command."""

from __future__ import annotations

import json

import pytest

from niyama.engine import simulate_cli
from niyama.engine.capacity import Probe, goodput
from niyama.engine.report import percentile
from niyama.engine.simulator import SimSetup, simulate
from niyama.qos.config import builtin_tier_config
from niyama.qos.errors import TraceError
from niyama.qos.policy import policy_config
from niyama.qos.traces import load_trace, parse_trace
from niyama.qos.workload import RatePhase, build_workload, parse_mix, parse_rate_schedule, rate_at

PAPER = builtin_tier_config("paper")


def test_builtin_traces_load():
    code = load_trace("azure-code")
    assert len(code) == 8819 and code.times[0] == 0.0
    assert code.native_rate == pytest.approx(8818 / code.times[-1])
    assert (code.prompt_lens[0], code.output_lens[0]) == (4808, 10)
    assert load_trace("sharegpt").times is None and len(load_trace("arxiv")) == 28257


def test_parse_azure_timestamps():
    trace = parse_trace("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 23:59:59.5000000,10,2\n2023-11-17 00:00:01.2500000,20,3\n", "t")
    assert trace.times == pytest.approx((0.0, 1.75))
    assert trace.prompt_lens == (10, 20) and trace.output_lens == (2, 3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "t: empty trace"),
        ("a,b\n1,2\n", "t:1: unrecognised header 'a,b'"),
        ("prompt_tokens,output_tokens\n10\n", "t:2: expected 2 columns, got 1"),
        ("prompt_tokens,output_tokens\n10,x\n", "t:2: output_tokens: expected a whole number, got 'x'"),
        ("prompt_tokens,output_tokens\n10,5\n0,5\n", "t:3: prompt_tokens: expected at least 1 token, got 0"),
        ("prompt_tokens,output_tokens,arrival_s\n1,1,5\n1,1,4\n", "t:3: arrival_s goes back in time"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,1\n", "t:2: TIMESTAMP: expected seconds or 'YYYY-MM-DD HH:MM:SS'"),
        ("prompt_tokens,output_tokens\n", "t: the trace has no requests"),
    ],
)
def test_malformed_traces(text, message):
    with pytest.raises(TraceError) as info:
        parse_trace(text, "t")
    assert str(info.value).startswith(message)


def test_timed_trace_is_rescaled_and_repeats():
    trace = parse_trace("prompt_tokens,output_tokens,arrival_s\n1,1,0\n2,1,1\n3,1,3\n", "t")
    assert trace.native_rate == pytest.approx(2 / 3)
    requests = build_workload(trace, PAPER, (1, 0, 0), (RatePhase(4 / 3, 10),), 4.0, seed=1)
    # gaps 1 and 2 at 2/3 req/s become 0.5 and 1 at 4/3 req/s; the wrap-around gap is the mean gap (1.5 -> 0.75)
    assert [r.arrival for r in requests] == pytest.approx([0.0, 0.5, 1.5, 2.25, 2.75, 3.75])
    assert [r.prompt_len for r in requests] == [1, 2, 3, 1, 2, 3]
    assert {r.tier for r in requests} == {"Q1"}


def test_workload_is_deterministic_per_seed():
    trace = load_trace("sharegpt")
    phases = (RatePhase(3.0, 100),)
    first = build_workload(trace, PAPER, (0.5, 0.25, 0.25), phases, 100.0, seed=7)
    assert first == build_workload(trace, PAPER, (0.5, 0.25, 0.25), phases, 100.0, seed=7)
    assert first != build_workload(trace, PAPER, (0.5, 0.25, 0.25), phases, 100.0, seed=8)
    assert all(0 <= r.arrival < 100 for r in first) and 200 < len(first) < 400


def test_rate_schedule():
    phases = parse_rate_schedule("2:900,5:900")
    assert phases == (RatePhase(2.0, 900.0), RatePhase(5.0, 900.0))
    assert [rate_at(phases, t) for t in (0, 899, 900, 1799, 1800)] == [2.0, 2.0, 5.0, 5.0, 2.0]
    for bad in ("2", "2:0", "-1:5", "a:b"):
        with pytest.raises(ValueError):
            parse_rate_schedule(bad)


def test_mix():
    assert parse_mix("2,1,1", PAPER) == (0.5, 0.25, 0.25)
    with pytest.raises(ValueError, match="mix has 2 shares but the tier file has 3 tiers"):
        parse_mix("1,1", PAPER)
    with pytest.raises(ValueError):
        parse_mix("0,0,0", PAPER)


def test_percentile_interpolates():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == pytest.approx(3.97)
    assert percentile([], 50) is None


def test_simulation_accounts_every_request():
    requests = build_workload(load_trace("azure-conv"), PAPER, (1 / 3,) * 3, (RatePhase(2.0, 60),), 60.0, seed=0)
    result = simulate(SimSetup(PAPER), requests)
    assert sum(len(r.outcomes) for r in result.tiers.values()) == len(requests)
    assert result.tokens == sum(r.prompt_len + r.max_new_tokens - 1 for r in requests)
    assert sum(o.tokens for r in result.tiers.values() for o in r.outcomes) == sum(r.max_new_tokens for r in requests)
    assert result.misses == 0 and not result.aborted


def test_simulation_rejects_requests_that_never_fit():
    requests = build_workload(load_trace("azure-code"), PAPER, (1 / 3,) * 3, (RatePhase(2.0, 30),), 30.0, seed=0)
    result = simulate(SimSetup(PAPER, policy_config("edf"), kv_tokens=4096), requests)
    too_big = sum(r.prompt_len + r.max_new_tokens > 4096 for r in requests)
    assert too_big > 0
    assert sum(r.rejected for r in result.tiers.values()) == too_big
    assert result.misses >= too_big


def test_goodput_bisects_to_two_percent():
    probes_seen = []

    def run(rate: float) -> Probe:
        probes_seen.append(rate)
        return Probe(rate, 100, 0 if rate <= 3.3 else 5)

    rate, probes = goodput(run, 1.0)
    assert rate <= 3.3 and 3.3 / rate <= 1.02
    assert probes_seen[:3] == [1.0, 2.0, 4.0]
    assert [p.rate for p in probes] == probes_seen
    assert goodput(lambda r: Probe(r, 100, 50), 1.0)[0] == 0.0


def run_cli(capsys, *argv):
    code = simulate_cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_is_byte_identical_for_a_seed(capsys):
    argv = ["--trace", "azure-conv", "--rate", "3", "--duration", "60", "--seed", "3", "--json"]
    code, first, _ = run_cli(capsys, *argv)
    assert code == 0
    _, second, _ = run_cli(capsys, *argv)
    assert first == second
    summary = json.loads(first)
    assert set(summary["tiers"]) == {"Q1", "Q2", "Q3"}
    q1 = summary["tiers"]["Q1"]
    for key in ("count", "completed", "relegated", "ttft_p50", "ttft_p95", "ttft_p99", "tbt_p50", "tbt_p95", "tbt_p99",
                "ttlt_p50", "ttlt_p95", "ttlt_p99", "violation_pct"):  # fmt: skip
        assert key in q1
    for key in ("violation_pct", "throughput_tokens_per_s", "mean_step_tokens", "steps"):
        assert key in summary
    _, other, _ = run_cli(capsys, *argv[:-2], "4", "--json")
    assert other != first


def test_cli_table(capsys):
    code, out, _ = run_cli(capsys, "--trace", "sharegpt", "--rate", "1", "--duration", "30", "--policy", "fcfs")
    assert code == 0
    assert out.splitlines()[0].split()[:6] == ["tier", "count", "completed", "rejected", "misses", "relegated"]
    assert "overall:" in out


def test_cli_goodput_and_silo(capsys):
    code, out, _ = run_cli(capsys, "--trace", "sharegpt", "--duration", "20", "--goodput", "--json", "--policy", "edf")
    assert code == 0 and json.loads(out)["goodput_rps"] > 0
    code, out, _ = run_cli(capsys, "--trace", "sharegpt", "--rate", "2", "--duration", "20", "--silo", "--json")
    result = json.loads(out)
    assert code == 0 and result["silo_total"] == sum(result["silo_replicas"].values()) >= result["shared_replicas"] >= 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rate", "0"], "--rate must be positive"),
        (["--rate", "-2"], "--rate must be positive"),
        (["--policy", "lifo"], "unknown policy 'lifo'"),
        (["--trace", "nowhere"], "unknown trace 'nowhere'"),
        (["--tiers", "missing.toml"], "cannot read tier file"),
        (["--trace", "sharegpt"], "--rate is required"),
        (["--mix", "1,2"], "mix has 2 shares"),
        (["--rate-schedule", "2:"], "rate schedule entries"),
        (["--latency-model", "h100"], "cannot read latency profile"),
        (["--without", "magic"], "unknown mechanism 'magic'"),
        (["--goodput", "--silo"], "not allowed with argument"),
        (["--duration", "abc"], "invalid float value"),
        (["--arrivals", "trace", "--burstiness", "0.5"], "--burstiness shapes gamma arrivals"),
        (["--burstiness", "0"], "--burstiness must be positive"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("niyama simulate: error: ")
    assert message in err


def test_cli_malformed_trace_and_tiers(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text("prompt_tokens,output_tokens\n10,-1\n")
    code, _, err = run_cli(capsys, "--trace", str(trace), "--rate", "1")
    assert code == 2 and err == f"niyama simulate: error: {trace}:2: output_tokens: expected at least 1 token, got -1\n"
    tiers = tmp_path / "tiers.toml"
    tiers.write_text('[[tiers]]\nname = "x"\nkind = "batch"\nttlt = "soon"\n')
    code, _, err = run_cli(capsys, "--tiers", str(tiers))
    assert code == 2 and err.startswith(f"niyama simulate: error: {tiers}: tier 'x': field 'ttlt': ")
