"""Processes the benches and tests start: stopped with everything they started, start-up failures explained."""

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from niyama.bench.servers import free_port, launch, sigterm_exits, stop, wait_healthy

# Starts a grandchild in its own process group, writes its pid, then sleeps; with "stubborn" it ignores SIGTERM.
PARENT = """
import signal, subprocess, sys, time
if sys.argv[2] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(120)
"""


def assert_ends(processes, pid: int, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while processes.alive(pid):
        assert time.monotonic() < deadline, f"process {pid} outlived stop()"
        time.sleep(0.02)


def started(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, int]:
    pid_file = tmp_path / f"{mode}.pid"
    process = launch([sys.executable, "-c", PARENT, str(pid_file), mode])
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    return process, int(pid_file.read_text())


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_stop_ends_the_process_and_what_it_left_behind(tmp_path, processes):
    process, child = started(tmp_path, "polite")
    stop(process, grace=10)
    assert process.returncode == -signal.SIGTERM
    assert_ends(processes, child)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path, processes):
    process, child = started(tmp_path, "stubborn")
    began = time.monotonic()
    stop(process, grace=0.5)
    assert process.returncode == -signal.SIGKILL and time.monotonic() - began < 10
    assert_ends(processes, child)


def test_a_server_that_exits_at_start_up_is_reported_with_its_log(tmp_path):
    log = tmp_path / "server.log"
    process = launch([sys.executable, "-c", "import sys; print('no such model'); sys.exit(3)"], log)
    with pytest.raises(RuntimeError, match=r"server demo exited with 3 at start-up; see .*server.log:\nno such model"):
        wait_healthy(process, f"http://127.0.0.1:{free_port()}", timeout=30, name="demo", log=log)


def test_a_server_that_never_answers_is_stopped_after_the_timeout():
    process = launch([sys.executable, "-c", "import time; time.sleep(120)"])
    with pytest.raises(RuntimeError, match="not healthy after 1 s"):
        wait_healthy(process, f"http://127.0.0.1:{free_port()}", timeout=1.0)
    assert process.returncode is not None


def test_sigterm_inside_sigterm_exits_runs_the_cleanup():
    code = (
        "import sys, time\n"
        "from niyama.bench.servers import sigterm_exits\n"
        "with sigterm_exits():\n"
        "    try:\n"
        "        print('ready', flush=True)\n"
        "        time.sleep(60)\n"
        "    finally:\n"
        "        print('stopped its servers', flush=True)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert output == "stopped its servers\n" and process.returncode == 128 + signal.SIGTERM
    previous = signal.getsignal(signal.SIGTERM)
    with sigterm_exits():
        assert signal.getsignal(signal.SIGTERM) is not previous
    assert signal.getsignal(signal.SIGTERM) is previous  # restored


def test_a_free_port_can_be_listened_on():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
        sock.listen()
