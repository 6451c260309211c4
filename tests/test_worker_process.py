"""The worker in its own process, as `niyama serve` runs it: a dead worker fails its requests, not the server.

Against a real `niyama serve` of the default model (slow: it loads the model
in its worker process). SIGKILL of the worker during a stream ends that
stream with a clear in-stream error while /health stays 200; the worker is
replaced, a new request then succeeds, and no KV block is left held. SIGKILL
of the server itself leaves no worker behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pytest
from harden_support import wait_until
from support import BackgroundStream

from niyama.bench.prometheus import parse
from niyama.bench.servers import running_server, stop
from niyama.qos.options import run_config
from niyama.router.serve import parser

pytestmark = pytest.mark.slow

SERVE_ARGS = ["--max-batch-total-tokens", "4096", "--latency-profile", "a100-llama3-8b", "--grace-period", "0"]


def test_no_torch_in_the_engine_qos_or_http_layer():
    code = "import sys, niyama.engine, niyama.qos, niyama.router.app; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def worker_pid(url: str) -> int:
    return httpx.get(f"{url}/info", timeout=10).json()["workers"][0]["pid"]


def test_a_killed_worker_fails_its_stream_and_is_replaced_while_the_server_stays_healthy():
    with running_server(SERVE_ARGS) as (_, url):
        info = httpx.get(f"{url}/info", timeout=10).json()
        expected = run_config(parser().parse_args(SERVE_ARGS), "serve", max_concurrent_requests=128).as_dict()
        assert info["niyama_config"] == expected  # /info reports the configuration it serves with
        victim = worker_pid(url)
        body = {"inputs": "Tell me a long story.", "parameters": {"max_new_tokens": 2000, "ignore_eos": True}}
        stream = BackgroundStream(url, body)
        assert stream.first_token.wait(60)
        os.kill(victim, signal.SIGKILL)
        last = json.loads(stream.last_event(60).removeprefix("data:"))
        assert last["error_type"] == "generation"
        assert "replica 0 failed (the worker process" in last["error"] and "killed by SIGKILL" in last["error"]
        assert "cannot be resumed" in last["error"]
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        wait_until(lambda: httpx.get(f"{url}/ready", timeout=10).status_code == 200, timeout=120)
        assert worker_pid(url) != victim
        answer = httpx.post(f"{url}/generate", json={"inputs": "Hello", "parameters": {"max_new_tokens": 5}},
                            timeout=60)  # fmt: skip
        assert answer.status_code == 200 and answer.json()["generated_text"]
        series = parse(httpx.get(f"{url}/metrics", timeout=10).text)
        assert series["niyama_kv_blocks_free"] == series["niyama_kv_blocks_total"]
        assert series['niyama_replica_restarts_total{replica="0"}'] == 1


def test_a_sigkilled_server_leaves_no_worker_behind(processes):
    with running_server(SERVE_ARGS) as (server, url):
        worker = worker_pid(url)
        assert processes.alive(worker)
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
        wait_until(lambda: not processes.alive(worker), timeout=10)
        stop(server)
