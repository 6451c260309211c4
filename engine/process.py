"""A worker in a child process of this one, reached over a socket pair: the local transport.

`WorkerProcess.start` runs ``python -m niyama.worker.host`` (or, for an
emulated device, ``niyama.worker.emulated``) with one end of a socket pair,
sends it the `WorkerConfig`, and waits until the model is loaded. Each call
is one pickled message each way (`multiprocessing.connection`). The child
ends with its parent however the parent ends: on `stop`, on the socket's
end-of-file (its parent exited or was killed), or when its parent process
changes (checked twice a second even mid-step), so no worker outlives its
server.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import IO

from .protocol import LOG_NEWLINE, WorkerConfig, WorkerInfo, WorkerLost, WorkerStartError

log = logging.getLogger("niyama.worker_process")

STOP_SECONDS = 10.0  # a stopped worker that has not exited by then is killed


def relay_logs(stream: IO[bytes], pid: int) -> None:
    """Log each line a worker writes on stderr here, so the server's handlers format it (`WORKER_LOG_FORMAT`).

    A line that is not a log record (a native library printing) is logged as a warning of this module.
    """
    for raw in stream:
        line = raw.decode(errors="replace").rstrip("\n")
        level, _, rest = line.partition(" ")
        name, record, message = rest.partition(": ")
        number = logging.getLevelName(level)
        if not (record and isinstance(number, int)):
            name, number, message = log.name, logging.WARNING, line
        logging.getLogger(name).log(number, "worker %d: %s", pid, message.replace(LOG_NEWLINE, "\n"))


class WorkerProcess:
    def __init__(self, config: WorkerConfig) -> None:
        ours, theirs = socket.socketpair()
        module = "niyama.worker.emulated" if config.emulation is not None else "niyama.worker.host"
        env = {**os.environ, "NIYAMA_WORKER_LOG_LEVEL": logging.getLevelName(logging.getLogger().level)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, str(theirs.fileno())], pass_fds=(theirs.fileno(),), env=env,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        theirs.close()
        self.pid = self.process.pid
        threading.Thread(target=relay_logs, args=(self.process.stderr, self.pid), daemon=True).start()
        self._connection = Connection(ours.detach())
        self._lock = threading.Lock()  # a step thread and a restart may call at once
        self._connection.send(config)

    @classmethod
    def start(cls, config: WorkerConfig) -> tuple[WorkerProcess, WorkerInfo]:
        """A loaded worker and what it loaded; `WorkerStartError` if it could not load."""
        worker = cls(config)
        try:
            info = worker._answer()
        except WorkerLost as error:
            worker.stop()
            raise WorkerStartError(f"the worker process could not start: {error}") from None
        except BaseException:
            worker.stop()
            raise
        return worker, info

    def call(self, method: str, *args: object) -> object:
        with self._lock:
            try:
                self._connection.send((method, args))
            except OSError:
                raise WorkerLost(f"the worker process {self.pid} is gone ({self._exit_status()})") from None
            return self._answer()

    def _answer(self) -> object:
        try:
            ok, value = self._connection.recv()
        except (EOFError, OSError):
            raise WorkerLost(f"the worker process {self.pid} is gone ({self._exit_status()})") from None
        if not ok:
            raise value
        return value

    def _exit_status(self) -> str:
        try:
            code = self.process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            return "it closed its pipe"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def stop(self) -> None:
        """End the worker: close its pipe (it exits), then kill it if it has not within STOP_SECONDS."""
        self._connection.close()
        try:
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning("worker process %d did not exit; killing it", self.pid)
            self.process.kill()
            self.process.wait()
