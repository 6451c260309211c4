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
import threading
import time

import httpx
import pytest

from niyama.bench.prometheus import parse
from niyama.bench.servers import running_server, stop

pytestmark = pytest.mark.slow

SERVE_ARGS = ["--max-batch-total-tokens", "4096", "--latency-profile", "a100-llama3-8b", "--grace-period", "0"]


def test_no_torch_in_the_engine_qos_or_http_layer():
    code = "import sys, niyama.engine, niyama.qos, niyama.router.app; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def worker_pid(url: str) -> int:
    return httpx.get(f"{url}/info", timeout=10).json()["workers"][0]["pid"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited


def wait_until(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_a_killed_worker_fails_its_stream_and_is_replaced_while_the_server_stays_healthy():
    with running_server(SERVE_ARGS) as (_, url):
        victim = worker_pid(url)
        events: list[str] = []
        first_token = threading.Event()

        def stream() -> None:
            body = {"inputs": "Tell me a long story.", "parameters": {"max_new_tokens": 2000, "ignore_eos": True}}
            with httpx.stream("POST", f"{url}/generate_stream", json=body, timeout=120) as answer:
                for line in answer.iter_lines():
                    if line.startswith("data:"):
                        events.append(line)
                        first_token.set()

        streamer = threading.Thread(target=stream)
        streamer.start()
        assert first_token.wait(60)
        os.kill(victim, signal.SIGKILL)
        streamer.join(60)
        assert not streamer.is_alive()
        last = json.loads(events[-1].removeprefix("data:"))
        assert last["error_type"] == "generation"
        assert "replica 0 failed (the worker process" in last["error"] and "killed by SIGKILL" in last["error"]
        assert "cannot be resumed" in last["error"]
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        wait_until(lambda: httpx.get(f"{url}/ready", timeout=10).status_code == 200)
        assert worker_pid(url) != victim
        answer = httpx.post(f"{url}/generate", json={"inputs": "Hello", "parameters": {"max_new_tokens": 5}},
                            timeout=60)  # fmt: skip
        assert answer.status_code == 200 and answer.json()["generated_text"]
        series = parse(httpx.get(f"{url}/metrics", timeout=10).text)
        assert series["niyama_kv_blocks_free"] == series["niyama_kv_blocks_total"]
        assert series['niyama_replica_restarts_total{replica="0"}'] == 1


def test_a_sigkilled_server_leaves_no_worker_behind():
    with running_server(SERVE_ARGS) as (server, url):
        worker = worker_pid(url)
        assert alive(worker)
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
        wait_until(lambda: not alive(worker), timeout=10)
        stop(server)
