"""A bench command stopped by SIGTERM or SIGINT (Ctrl-C) stops every process it started.

Each command runs with a marker of its own in its environment, which the
processes it starts inherit; once the command has ended, no process may
carry the marker. The command gets the signal alone (``kill PID``, not its
process group), as a supervisor or a test harness would send it. The session
as a whole is checked the same way at its end (tests/conftest.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKER = "NIYAMA_ORPHAN_TEST"
PROFILE = ROOT / "docs" / "results" / "qos_evaluation" / "latency_profile.json"
STARTUP_TIMEOUT = 900  # a first server start on a machine profiles the device
STOP_TIMEOUT = 60  # evaluate_qos gives its servers 20 s to drain before SIGKILL


class Command:
    """``python -m MODULE ARGS`` with a marker of its own, its output in ``log``."""

    def __init__(self, processes, module: str, args: list[str], log: Path) -> None:
        self.processes, self.marker, self.log = processes, uuid.uuid4().hex, log
        with log.open("w") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", module, *args], env={**os.environ, MARKER: self.marker}, cwd=ROOT,
                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def started(self) -> list[int]:
        """What the command has started and is still running (its own process left out)."""
        return [pid for pid in self.processes.marked(MARKER, self.marker) if pid != self.process.pid]

    def wait_for(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                pytest.fail(f"the command exited ({self.process.returncode}) before {what}:\n{self.log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {timeout:.0f} s:\n{self.log.read_text()}")
            time.sleep(0.2)

    def stop(self, signum: int) -> list[str]:
        """Send ``signum`` to the command alone; once it has ended, what it left running (killed now)."""
        self.process.send_signal(signum)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STOP_TIMEOUT} s after {signal.Signals(signum).name}:\n{self.log.read_text()}")
        return self.processes.end(self.started(), grace=2.0)

    def clean_up(self) -> None:
        """Whatever a failed test left: the command's group, then whatever carries its marker."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)
        self.processes.end(self.processes.marked(MARKER, self.marker), grace=0.0)


@pytest.fixture
def command(processes, tmp_path):
    started = []

    def start(module: str, *args: str) -> Command:
        started.append(Command(processes, module, list(args), tmp_path / f"command{len(started)}.log"))
        return started[-1]

    yield start
    for each in started:
        each.clean_up()


def evaluation(command, out: Path) -> Command:
    """The evaluation at its smallest (docs/bench.md's smoke run, longer warm-up so it is still running)."""
    return command(
        "niyama.bench.evaluate_qos", "--latency-profile", str(PROFILE), "--no-silo", "--warmup", "120",
        "--duration", "8", "--max-probes", "1", "--flood-seconds", "8", "--flood-batch-requests", "4",
        "--flood-batch-window", "4", "--no-progress", "--out", str(out),
    )  # fmt: skip


@pytest.mark.slow
def test_sigterm_of_evaluate_qos_stops_its_running_servers(command, tmp_path):
    bench = evaluation(command, tmp_path / "out")
    bench.wait_for(lambda: "servers up" in bench.log.read_text(), STARTUP_TIMEOUT, "servers up")
    servers = bench.started()
    assert len(servers) >= 3, servers  # niyama, fcfs, edf
    left = bench.stop(signal.SIGTERM)
    assert not left, "evaluate_qos left running:\n" + "\n".join(left)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_evaluate_qos_stopped_while_a_server_starts_stops_it(command, tmp_path, signum):
    bench = evaluation(command, tmp_path / "out")
    bench.wait_for(bench.started, STARTUP_TIMEOUT, "server process")
    time.sleep(1.0)  # the server is loading its model, not yet healthy
    left = bench.stop(signum)
    assert not left, "evaluate_qos left running:\n" + "\n".join(left)


@pytest.mark.parametrize(
    "module", ["niyama.bench.replica_routing", "niyama.bench.qos_policies"], ids=["replica_routing", "qos_policies"]
)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_simulation_bench_ends_its_worker_processes(command, module, signum):
    bench = command(module, "--jobs", "2")
    bench.wait_for(lambda: len(bench.started()) >= 2, 120, "worker processes")
    time.sleep(0.5)  # the workers are simulating
    left = bench.stop(signum)
    assert not left, f"{module} left running:\n" + "\n".join(left)
