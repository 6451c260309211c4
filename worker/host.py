"""A worker process: one model replica's runner, serving the engine's calls.

`WorkerHost` holds a `ModelRunner` and answers the calls of the engine's
`WorkerClient` (`info`, `latency_profile`, `step`), applying each step's
registry changes and block-table deltas before the step itself. It is hosted
as a child process (``python -m niyama.worker.host FD``, a socket pair) of
the server, or of the Ray actor that stands for it on another node
(`engine.ray_transport.WorkerActor`): one process, one mechanism; the pipe
itself, and how errors cross it, is `pipe.py`, shared with the emulated
device (`emulated.py`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace

import torch

from niyama.engine.protocol import StepCall, WorkerConfig, WorkerInfo
from niyama.qos.plan import StepResult

from .kv_cache import size_cache
from .loading import load_model
from .pipe import serve
from .profile import cached_profile, device_name
from .runner import ModelRunner


class WorkerHost:
    def __init__(self, runner: ModelRunner) -> None:
        self.runner = runner
        self.tables: dict[str, tuple[int, ...]] = {}

    @classmethod
    def load(cls, config: WorkerConfig) -> WorkerHost:
        if config.threads:
            torch.set_num_threads(config.threads)
        loaded = load_model(
            config.model_id, device=config.device, dtype=config.dtype, gpus=config.gpus, revision=config.revision,
            trust_remote_code=config.trust_remote_code,
        )
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


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1]), WorkerHost.load))
