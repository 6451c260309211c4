"""Shared fixtures, and the session's check that no process the suite started outlives it.

At the start of the session ``NIYAMA_TEST_SESSION`` is set to a fresh id in
this process's environment, so every process the suite starts (servers,
bench commands, notebook kernels, Ray's daemons) inherits it, even one that
is later re-parented to init. At the end, after every fixture is torn down,
the suite looks in /proc for processes that carry the id or descend from
pytest; any still running after a short grace is killed and reported, and the
session fails. Linux only (elsewhere the check is skipped).
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

SESSION_MARKER = "NIYAMA_TEST_SESSION"
PROC = Path("/proc")
# Started by pytest's own process and ended by its exit (their pipe from it closes): not the suite's to stop.
ENDS_WITH_PYTEST = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
_marker = pytest.StashKey[str]()
_leftovers = pytest.StashKey[list[str]]()


class Processes:
    """This machine's running processes as /proc shows them (the current user's; zombies left out)."""

    @staticmethod
    def _status(pid: int) -> tuple[int, str] | None:
        """(parent pid, state), or None when the process is gone."""
        try:
            stat = (PROC / str(pid) / "stat").read_text()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2 :].split()
        return int(fields[1]), fields[0]

    @classmethod
    def running(cls) -> dict[int, int]:
        """pid -> parent pid of every live process."""
        table = {}
        for entry in PROC.iterdir():
            if entry.name.isdigit() and (status := cls._status(int(entry.name))) and status[1] not in "ZX":
                table[int(entry.name)] = status[0]
        return table

    @classmethod
    def marked(cls, name: str, value: str) -> list[int]:
        """Live processes whose environment has ``name=value`` (set before they started, or inherited)."""
        needle = f"{name}={value}".encode()
        found = []
        for pid in cls.running():
            try:
                environ = (PROC / str(pid) / "environ").read_bytes()
            except OSError:  # gone, or another user's
                continue
            if needle in environ.split(b"\0"):
                found.append(pid)
        return sorted(found)

    @classmethod
    def descendants(cls, root: int) -> list[int]:
        table = cls.running()
        found = []
        for pid in table:
            parent, seen = table.get(pid), 0
            while parent not in (None, 0, 1) and seen < 64:
                if parent == root:
                    found.append(pid)
                    break
                parent, seen = table.get(parent), seen + 1
        return sorted(found)

    @staticmethod
    def alive(pid: int) -> bool:
        status = Processes._status(pid)
        return status is not None and status[1] not in "ZX"

    @staticmethod
    def describe(pid: int) -> str:
        def read(name: str) -> str:
            try:
                return (PROC / str(pid) / name).read_bytes().decode(errors="replace")
            except OSError:
                return ""

        argv = read("cmdline").replace("\0", " ").strip() or "?"
        rss = next((line.split()[1] for line in read("status").splitlines() if line.startswith("VmRSS:")), "?")
        status = Processes._status(pid)
        return f"pid {pid} (parent {status[0] if status else '?'}, {rss} kB resident): {argv[:300]}"

    @classmethod
    def end(cls, pids: list[int], grace: float = 10.0) -> list[str]:
        """Give ``pids`` ``grace`` seconds to end by themselves, then kill the rest; describe those killed."""
        deadline = time.monotonic() + grace
        left = [pid for pid in pids if cls.alive(pid)]
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = [pid for pid in left if cls.alive(pid)]
        killed = []
        for pid in left:
            killed.append(cls.describe(pid))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return killed


@pytest.fixture
def processes() -> type[Processes]:
    """Find and end processes by the marker in their environment (see `Processes`)."""
    return Processes


@pytest.fixture(scope="session")
def default_model():
    """The embedded SmolLM2-135M, loaded once per test session (converted from GGUF on first use)."""
    from niyama.worker.loading import load_model

    return load_model()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_marker] = os.environ[SESSION_MARKER] = uuid.uuid4().hex


@pytest.hookimpl(trylast=True)  # after pytest's own hook has torn the session's fixtures down
def pytest_sessionfinish(session: pytest.Session) -> None:
    marker = session.config.stash.get(_marker, None)
    if marker is None or not PROC.is_dir():
        return
    me = os.getpid()
    suspects = set(Processes.marked(SESSION_MARKER, marker)) | set(Processes.descendants(me))
    suspects.discard(me)
    for pid in list(suspects):
        status, argv = Processes._status(pid), Processes.describe(pid)
        if status and status[0] == me and any(name in argv for name in ENDS_WITH_PYTEST):
            suspects.discard(pid)
    killed = Processes.end(sorted(suspects))
    if killed:
        session.config.stash[_leftovers] = killed
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    killed = config.stash.get(_leftovers, [])
    if killed:
        terminalreporter.section("processes the suite started and left running", sep="=", red=True, bold=True)
        for line in killed:
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"{len(killed)} process(es) killed; the session fails (see tests/conftest.py).")
