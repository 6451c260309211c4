"""`niyama serve` processes for benches and tests: started, polled until healthy, and always stopped.

``launch`` starts a process in a session of its own, ``wait_healthy`` polls
its /health, ``stop`` ends it and everything it started (SIGTERM, then
SIGKILL to its whole process group); ``start_server``/``running_server`` do
all three for `niyama serve` on a free local port. ``free_port`` is the one
way to pick a port.

For an evaluation, ``ServerGroup`` starts servers on chosen cores.

Each server is its own process (``python -m niyama.router.cli serve``),
pinned with ``taskset`` to its share of the cores, with torch's intra-op
threads set to match through ``OMP_NUM_THREADS`` (torch reads it at start),
so a siloed deployment really splits the machine. Every server gets
``OMP_WAIT_POLICY=PASSIVE`` (unless set): with OpenMP's default spin-waiting,
a two-thread step on a machine with any other load ran 4-6x *slower* than a
one-thread step (its threads spin while the partner they wait for is
descheduled; ``niyama bench threads``, docs/results/qos_evaluation.md),
which would measure the machine's other tenants, not the scheduling.
``ServerGroup`` is a context manager: whatever happens (an error, Ctrl-C),
every server it started is stopped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .prometheus import scrape  # noqa: F401  (evaluate_qos reads its servers' series through this name)

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
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_argv(args: Sequence[str], port: int) -> list[str]:
    """`niyama serve` on 127.0.0.1:``port`` with ``args``, as this interpreter runs it."""
    return [sys.executable, "-m", "niyama.router.cli", "serve", "--hostname", "127.0.0.1", "--port", str(port), *args]


def command(spec: ServerSpec, port: int) -> tuple[list[str], dict[str, str]]:
    argv = serve_argv(spec.args, port)
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


def launch(
    argv: Sequence[str], log: Path | None = None, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen:
    """Start ``argv`` in a session of its own (so ``stop`` reaches whatever it starts), its output in ``log``."""
    with open(log or os.devnull, "wb") as sink:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            list(argv), env=None if env is None else dict(env), cwd=cwd, stdout=sink, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip


def wait_healthy(
    process: subprocess.Popen, url: str, timeout: float = STARTUP_TIMEOUT, name: str = "niyama serve",
    log: Path | None = None,
) -> None:  # fmt: skip
    """Poll ``url``/health until it answers 200.

    Raises ``RuntimeError`` when the process exits first or after ``timeout``
    seconds; then, or when anything else interrupts the wait (Ctrl-C,
    SIGTERM in ``sigterm_exits``), the process is stopped first.
    """
    deadline = time.monotonic() + timeout
    try:
        while not healthy(url):
            if process.poll() is not None:
                raise RuntimeError(f"server {name} exited with {process.returncode} at start-up{_log_tail(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {name} not healthy after {timeout:.0f} s at start-up{_log_tail(log)}")
            time.sleep(0.25)
    except BaseException:
        stop(process)
        raise


def _log_tail(log: Path | None, chars: int = 3000) -> str:
    if log is None:
        return ""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return f"; see {log}"
    return f"; see {log}:\n{text[-chars:]}" if text else f"; see {log} (empty)"


def start_server(
    args: Sequence[str], port: int | None = None, log: Path | None = None, timeout: float = STARTUP_TIMEOUT,
    env: Mapping[str, str] | None = None, cwd: Path | None = None,
) -> tuple[subprocess.Popen, str]:  # fmt: skip
    """`niyama serve` with ``args`` on 127.0.0.1 (``port``, or a free one), healthy: (its process, its URL).

    Stop it with ``stop``; or use ``running_server``, which always does.
    """
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    process = launch(serve_argv(args, port), log, env, cwd)
    wait_healthy(process, url, timeout, log=log)
    return process, url


@contextlib.contextmanager
def running_server(args: Sequence[str], **options) -> Iterator[tuple[subprocess.Popen, str]]:
    """``start_server`` for a ``with`` block: the server (and whatever it started) is stopped at its end."""
    process, url = start_server(args, **options)
    try:
        yield process, url
    finally:
        stop(process)


def stop(*processes: subprocess.Popen, grace: float = 20.0) -> None:
    """Stop processes that ``launch`` started, and everything they started; each ``returncode`` is then set.

    SIGTERM to each process (a server drains, then stops its own workers),
    all at once; whatever has not exited ``grace`` s later, and whatever an
    exited one left behind in its process group, gets SIGKILL.
    """
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # its group: started with a session of its own
        process.wait(10)


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    """Within the block SIGTERM raises ``SystemExit`` (status 143), so ``finally`` and ``with`` blocks run.

    A bench command that starts servers wraps its work in it: SIGTERM to the
    command then stops its servers as Ctrl-C does. Main thread only.
    """

    def leave(signum, frame) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
        server = Server(spec, f"http://127.0.0.1:{port}", launch(argv, log, env), log)
        wait_healthy(server.process, server.url, STARTUP_TIMEOUT, spec.name, log)
        return server

    def stop(self, grace: float = 20.0) -> None:
        stop(*(server.process for server in self.servers.values()), grace=grace)
        self.servers.clear()
