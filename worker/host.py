"""A worker process: one model replica's runner, serving the engine's calls.

`WorkerHost` holds a `ModelRunner` and answers the calls of the engine's
`WorkerClient` (`info`, `latency_profile`, `step`), applying each step's
registry changes and block-table deltas before the step itself. It is hosted
as a child process (``python -m niyama.worker.host FD``, a socket pair) of
the server, or of the Ray actor that stands for it on another node
(`engine.ray_transport.WorkerActor`): one process, one mechanism. Exceptions cross the boundary as the engine's own
types (`engine.protocol`), so the server never imports torch to read them.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import replace
from multiprocessing.connection import Connection

import torch

from niyama.engine.protocol import (
    PlanError,
    SequenceError,
    StepCall,
    StepFailed,
    WorkerConfig,
    WorkerInfo,
    WorkerStartError,
)
from niyama.qos.plan import StepResult

from .kv_cache import size_cache
from .loading import load_model
from .profile import cached_profile, device_name
from .runner import ModelRunner

log = logging.getLogger("niyama.worker")

CALLS = ("info", "latency_profile", "step")


class WorkerHost:
    def __init__(self, runner: ModelRunner) -> None:
        self.runner = runner
        self.tables: dict[str, tuple[int, ...]] = {}

    @classmethod
    def load(cls, config: WorkerConfig) -> WorkerHost:
        if config.threads:
            torch.set_num_threads(config.threads)
        loaded = load_model(config.model_id, device=config.device, dtype=config.dtype, gpus=config.gpus)
        spec = size_cache(
            loaded.model.config, loaded.dtype, loaded.device, block_size=config.block_size,
            kv_cache_tokens=config.kv_cache_tokens, layer_devices=loaded.layer_devices,
        )  # fmt: skip
        return cls(ModelRunner(loaded, spec))

    def info(self) -> WorkerInfo:
        loaded, spec = self.runner.loaded, self.runner.spec
        return WorkerInfo(
            model_id=loaded.model_id,
            checkpoint=loaded.path.name,
            path=str(loaded.path),
            device=loaded.device.type,
            device_name=device_name(loaded.device),
            dtype=str(loaded.dtype).removeprefix("torch."),
            num_blocks=spec.num_blocks,
            block_size=spec.block_size,
            max_context=loaded.max_context,
            vocab_size=self.runner.vocab_size,
            eos_token_ids=loaded.eos_token_ids,
            node="127.0.0.1",  # a Ray actor in front of it reports its node's address instead
            pid=os.getpid(),
        )

    def latency_profile(self) -> str:
        """This worker's start-up profile (JSON text), measured once per model and device, then cached."""
        return cached_profile(self.runner.loaded).read_text(encoding="utf-8")

    def step(self, call: StepCall) -> StepResult:
        for request_id, prompt_ids, params in call.changes:
            if prompt_ids is None:
                self.runner.remove_sequence(request_id)
                self.tables.pop(request_id, None)
            else:
                self.runner.add_sequence(request_id, list(prompt_ids), params)
        for request_id, (keep, new) in call.tables.items():
            self.tables[request_id] = self.tables.get(request_id, ())[:keep] + new
        tables = {chunk.request_id: self.tables.get(chunk.request_id, ()) for chunk in call.plan.chunks}
        return self.runner.execute(replace(call.plan, block_tables=tables))

    def handle(self, method: str, args: tuple) -> tuple[bool, object]:
        """One call: (True, its value) or (False, the exception to raise in the engine)."""
        if method not in CALLS:
            return False, PlanError(f"a worker has no call {method!r}")
        try:
            return True, getattr(self, method)(*args)
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


def main(fd: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the server drains, then stops us
    logging.basicConfig(level=os.environ.get("NIYAMA_WORKER_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s[worker %(process)d]: %(message)s")  # fmt: skip
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    connection = Connection(socket.socket(fileno=fd).detach())
    try:
        config = connection.recv()
        try:
            host = WorkerHost.load(config)
        except Exception as error:  # noqa: BLE001 - reported to the server, which says why it cannot start
            connection.send((False, WorkerStartError(str(error))))
            return 1
        connection.send(host.handle("info", ()))  # loaded: the server waits for this
        while True:
            method, args = connection.recv()
            connection.send(host.handle(method, args))
    except (EOFError, OSError):  # the server closed the pipe or is gone
        return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
