"""The worker side of the pipe: one call in, one answer out, until the server closes it or goes away.

Every worker process (a model's `host.WorkerHost`, an emulated device's
`emulated.EmulatedHost`) is served by `serve`: it reads the `WorkerConfig`,
loads the host (its start-up error is sent back as `WorkerStartError`), sends
the `info` answer, then answers each call. Exceptions cross as the engine's
own types (`engine.protocol`), so the server never imports torch to read
them. Nothing here imports torch: an emulated device starts without it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Protocol

from niyama.engine.protocol import (
    LOG_NEWLINE,
    WORKER_LOG_FORMAT,
    PlanError,
    SequenceError,
    StepCall,
    StepFailed,
    WorkerConfig,
    WorkerInfo,
    WorkerStartError,
)
from niyama.qos.plan import StepResult

log = logging.getLogger("niyama.worker")

CALLS = ("info", "latency_profile", "step")


class Host(Protocol):
    """What a worker process answers: the engine's `WorkerClient` calls these by name."""

    def info(self) -> WorkerInfo: ...

    def latency_profile(self) -> str: ...

    def step(self, call: StepCall) -> StepResult: ...


def handle(host: Host, method: str, args: tuple) -> tuple[bool, object]:
    """One call: (True, its value) or (False, the exception to raise in the engine)."""
    if method not in CALLS:
        return False, PlanError(f"a worker has no call {method!r}")
    try:
        return True, getattr(host, method)(*args)
    except (PlanError, SequenceError) as error:
        return False, error
    except Exception as error:  # noqa: BLE001 - the step fails, the worker stays
        log.exception("%s failed", method)
        return False, StepFailed(f"{type(error).__name__}: {error}")


def _exit_with_parent(parent: int) -> None:
    """A daemon thread: the worker ends when its server does, even in the middle of a long step."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


class _OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", LOG_NEWLINE)


def _log_to_server() -> None:
    """Every record, and Python's warnings, as one line each on stderr, where the server reads them."""
    handler = logging.StreamHandler()
    handler.setFormatter(_OneLineFormatter(WORKER_LOG_FORMAT))
    logging.basicConfig(level=os.environ.get("NIYAMA_WORKER_LOG_LEVEL", "WARNING"), handlers=[handler])
    logging.captureWarnings(True)


def serve(fd: int, load: Callable[[WorkerConfig], Host]) -> int:
    """The worker process's life on socket ``fd``: load with the config it is sent, then answer calls."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the server drains, then stops us
    _log_to_server()
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    connection = Connection(socket.socket(fileno=fd).detach())
    try:
        config = connection.recv()
        began = time.monotonic()
        try:
            host = load(config)
        except Exception as error:  # noqa: BLE001 - reported to the server, which says why it cannot start
            connection.send((False, WorkerStartError(str(error))))
            return 1
        log.info("loaded %s in %.1f s", config.model_id, time.monotonic() - began)
        connection.send(handle(host, "info", ()))  # loaded: the server waits for this
        while True:
            method, args = connection.recv()
            connection.send(handle(host, method, args))
    except (EOFError, OSError):  # the server closed the pipe or is gone
        return 0
