"""`niyama bench serve` end to end: our server over both APIs, siloed routes, and clear errors for bad input."""

from __future__ import annotations

import json
import threading

import pytest
from bench_fake import FakeServer, ThreadedFake
from router_server import tiny_server

from niyama.bench.cli import main as bench_main
from niyama.bench.serve_cli import main

SMALL = ["--trace", "azure-conv", "--scale-lengths", "0.05", "--max-output-tokens", "4", "--rate", "4",
         "--duration", "1.5", "--seed", "3", "--no-progress"]  # fmt: skip


@pytest.mark.parametrize("api", ["tgi", "openai"])
def test_against_our_server(api, tmp_path):
    with tiny_server() as server:
        code = main(["--url", server.url, "--api", api, "--tiers", "default", *SMALL, "--out", str(tmp_path)])
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    (run,) = results["runs"]
    assert run["summary"]["requests"] == run["planned_requests"] > 0
    assert run["summary"]["completed"] == run["summary"]["requests"]
    for record in run["records"]:
        assert record["error"] is None
        # ignore_eos: every request got the scaled trace length it asked for; prompts have the exact length.
        assert len(record["token_s"]) == record["max_tokens"] == record["reported_tokens"]
        assert record["prompt_tokens"] == record["prompt_tokens_trace_scaled"]
    tiers = {record["tier"] for record in run["records"]}
    assert tiers <= {"interactive", "batch"}
    assert results["config"]["api"] == api and (tmp_path / "summary.md").read_text().startswith("# niyama bench")


def test_routes_send_each_tier_to_its_own_server(tmp_path):
    with ThreadedFake(FakeServer()) as first, ThreadedFake(FakeServer()) as second:
        code = main(["--route", f"interactive={first.url}", "--route", f"batch={second.url}", *SMALL,
                     "--out", str(tmp_path)])  # fmt: skip
        assert code == 0
        assert {h["x-qos-tier"] for _, h, _ in first.server.bodies} == {"interactive"}
        assert {h["x-qos-tier"] for _, h, _ in second.server.bodies} == {"batch"}


def no_stray_threads(before: set[threading.Thread]) -> None:
    stray = [t for t in threading.enumerate() if t not in before and not t.daemon]
    assert stray == []


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--url", "http://127.0.0.1:9", "--rate", "1"], "cannot reach http://127.0.0.1:9"),
        (["--url", "ftp://x", "--rate", "1"], "URL must start with http://"),
        (["--rate", "1"], "no URL for tier(s) interactive, batch"),
        (["--url", "FAKE", "--rate", "1", "--trace", "nope"], "unknown trace 'nope'"),
        (["--url", "FAKE", "--rate", "1", "--trace", "MISSING.csv"], "cannot read trace"),
        (["--url", "FAKE", "--rate", "1", "--trace", "BAD.csv"], "BAD.csv:2: prompt_tokens: expected a whole number"),
        (["--url", "FAKE", "--rate", "1", "--tiers", "MISSING.toml"], "cannot read tier file"),
        (["--url", "FAKE", "--rate", "1", "--mix", "1,2,3"], "mix has 3 shares"),
        (["--url", "FAKE", "--rate", "0"], "--rate must be positive"),
        (["--url", "FAKE"], "give --rate or --rate-schedule"),
        (["--url", "FAKE", "--rate", "1", "--arrivals", "trace", "--trace", "sharegpt"], "has no timestamps"),
        (["--url", "FAKE", "--rate", "1", "--route", "premium=http://x"], "--route: unknown tier 'premium'"),
        (["--url", "FAKE", "--rate", "1", "--scale-lengths", "zero"], "--scale-lengths takes"),
        (["--url", "FAKE", "--rate", "1", "--api", "grpc"], "invalid choice: 'grpc'"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(argv, message, tmp_path, capsys):
    before = set(threading.enumerate())
    (tmp_path / "BAD.csv").write_text("prompt_tokens,output_tokens\nx,3\n")
    with ThreadedFake(FakeServer()) as fake:
        argv = [fake.url if arg == "FAKE" else str(tmp_path / arg) if arg == "BAD.csv" else arg for arg in argv]
        code = main([*argv, "--duration", "1", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("niyama bench serve: error: ") and message in err
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()
    no_stray_threads(before)


def test_a_tier_the_server_does_not_know_fails_before_any_load(tmp_path, capsys):
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(
        'default = "premium"\n[[tiers]]\nname = "premium"\nkind = "interactive"\nttft = "1s"\ntbt = "1s"\n'
    )
    with ThreadedFake(FakeServer()) as fake:
        code = main(["--url", fake.url, "--tiers", str(tiers), "--rate", "5", "--out", str(tmp_path / "out")])
        assert len(fake.server.bodies) == 1  # the one test request, then nothing
    err = capsys.readouterr().err
    assert code == 2 and "a test request in tier 'premium' failed: HTTP 422" in err and "unknown QoS tier" in err


def test_serve_is_registered_with_niyama_bench(capsys):
    assert bench_main(["--help"]) == 0
    assert "serve" in capsys.readouterr().out
