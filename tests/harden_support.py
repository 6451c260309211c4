"""What the hardening tests share: the error envelope, polling, the server's settled state, paced steps."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import requests

from niyama.bench import prometheus
from niyama.engine.faults import WrappedWorker


def assert_envelope(response: requests.Response, status: int, error_type: str) -> str:
    """``response`` is ``status`` with TGI's JSON envelope of ``error_type``; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type, body
    return body["error"]


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def metric(server, name: str, default: float | None = None) -> float:
    """The server's series ``name`` (with its labels, e.g. ``tgi_request_failure{err="internal"}``) from /metrics.

    A series the server has not written is ``default``, or fails the test when no default is given.
    """
    series = prometheus.parse(requests.get(server.url + "/metrics", timeout=10).text)
    if default is None:
        assert name in series, f"{name} not in /metrics"
    return series.get(name, default)


def settled(server) -> bool:
    """Nothing in flight: every KV block free, no generation, no concurrency permit held."""
    state = server.state
    stats = state.engine.stats()
    return stats.free_blocks == stats.total_blocks and state.engine.in_flight == 0 and state.inference.limit.in_use == 0


class PacedWorker(WrappedWorker):
    """The real runner, 20 ms more per step: requests stay in flight long enough to look at them."""

    seconds = 0.02

    def before_step(self, plan) -> None:
        time.sleep(self.seconds)


class HeldStream:
    """A `/generate_stream` request that has started (one event read) and stays in flight until closed.

    The line iterator is kept: dropping it would make urllib3 close the connection, i.e. disconnect.
    """

    def __init__(self, url: str, body: dict, headers: dict[str, str] | None = None) -> None:
        self.response = requests.post(url + "/generate_stream", json=body, headers=headers, stream=True, timeout=30)
        assert self.response.status_code == 200, self.response.text
        self.lines = self.response.iter_lines()
        next(self.lines)

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> HeldStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def connect(url: str, timeout: float = 10.0) -> socket.socket:
    """A raw TCP connection to the test server (for what ordinary clients cannot do)."""
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data
