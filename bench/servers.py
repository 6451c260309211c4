"""`niyama serve` processes for an evaluation: started on chosen cores, watched, and always stopped.

Each server is its own process (``python -m niyama.router.cli serve``),
pinned with ``taskset`` to its share of the cores, with torch's intra-op
threads set to match through ``OMP_NUM_THREADS`` (torch reads it at start),
so a siloed deployment really splits the machine. Every server gets
``OMP_WAIT_POLICY=PASSIVE`` (unless set): with OpenMP's default spin-waiting,
a two-thread step on a machine with any other load ran 4-6x *slower* than a
one-thread step (its threads spin while the partner they wait for is
descheduled; ``niyama bench threads``, docs/results/qos_evaluation.md),
which would measure the machine's other tenants, not the scheduling.
``ServerGroup`` is a
context manager: whatever happens (an error, Ctrl-C), every server it
started gets SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

STARTUP_TIMEOUT = 900.0  # a first start may profile the model: minutes on a busy CPU


@dataclass
class ServerSpec:
    name: str
    args: list[str]  # `niyama serve` flags besides --port and --hostname
    cores: list[int] | None = None  # None: every core
    threads: int | None = None  # torch threads; default: len(cores) or the machine's


@dataclass
class Server:
    spec: ServerSpec
    url: str
    process: subprocess.Popen
    log: Path
    metrics: list[dict] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command(spec: ServerSpec, port: int) -> tuple[list[str], dict[str, str]]:
    argv = [sys.executable, "-m", "niyama.router.cli", "serve", "--hostname", "127.0.0.1", "--port", str(port)]
    argv += spec.args
    if spec.cores is not None and shutil.which("taskset"):
        argv = ["taskset", "-c", ",".join(map(str, spec.cores)), *argv]
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    threads = spec.threads or (len(spec.cores) if spec.cores else None)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return argv, env


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def scrape(url: str) -> dict[str, float]:
    """The server's Prometheus series as {"name{labels}": value} (empty when unreachable)."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    series = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                series[name] = float(value)
            except ValueError:
                continue
    return series


class ServerGroup:
    def __init__(self, specs: list[ServerSpec], log_dir: Path) -> None:
        self.specs = specs
        self.log_dir = log_dir
        self.servers: dict[str, Server] = {}

    def __enter__(self) -> ServerGroup:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for spec in self.specs:  # one at a time: a first start may profile, and profiles want the cores
                self.servers[spec.name] = self._start(spec)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __getitem__(self, name: str) -> Server:
        return self.servers[name]

    def _start(self, spec: ServerSpec) -> Server:
        port = free_port()
        argv, env = command(spec, port)
        log = self.log_dir / f"{spec.name}.log"
        with log.open("w") as sink:
            process = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        server = Server(spec, f"http://127.0.0.1:{port}", process, log)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not healthy(server.url):
            if process.poll() is not None:
                raise RuntimeError(f"server {spec.name} exited with {process.returncode} at start-up; see {log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {spec.name} not healthy after {STARTUP_TIMEOUT:.0f} s; see {log}")
            time.sleep(1.0)
        return server

    def stop(self, grace: float = 20.0) -> None:
        for server in self.servers.values():
            if server.process.poll() is None:
                server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for server in self.servers.values():
            try:
                server.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait(10)
        self.servers.clear()
