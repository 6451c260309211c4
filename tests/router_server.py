"""Router test harness: a real engine on a tiny random Llama, served by uvicorn on a free local port.

The tiny model has the real SmolLM2 vocabulary (49152 tokens) and the real
tokenizer, so text, special tokens and multi-byte characters behave as in
production, while a step takes milliseconds. Its worker runs in-process (the
`Worker` protocol lets a test wrap it), where `niyama serve` runs it in a
worker process. The server runs in a thread with its own event loop, so
tests talk to it over real HTTP (streaming and disconnects included) with
ordinary clients.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from collections.abc import Callable

import torch
import uvicorn
from support import make_runner, tiny_llama, tiny_loaded

from niyama.engine.replicas import ReplicaParts, ReplicaSet
from niyama.qos.config import TierConfig, builtin_tier_config
from niyama.qos.predictor import LatencyPredictor
from niyama.qos.routing import make_routing
from niyama.qos.scheduler import make_scheduler
from niyama.router.app import create_app
from niyama.router.limits import server_options
from niyama.router.settings import ServerSettings
from niyama.router.tokenizer import TextTokenizer

VOCAB = 49152


@functools.cache
def real_tokenizer() -> TextTokenizer:
    """The default model's tokenizer, without loading its weights."""
    from transformers import AutoTokenizer

    from niyama.worker.loading import resolve_checkpoint

    return TextTokenizer(AutoTokenizer.from_pretrained(resolve_checkpoint(None)[1]))


@functools.cache
def tiny_model():
    return tiny_llama(torch.float32, vocab_size=VOCAB, max_position_embeddings=1024)


def tiny_parts(
    kv_tokens: int = 8192, worker: Callable | None = None, eos: frozenset[int] = frozenset(), model=None,
    grammars: bool = False,
) -> ReplicaParts:
    """A replica on ``model`` (default: the float32 tiny Llama), its runner in-process; ``worker`` wraps it.

    ``grammars``: the worker gets the real tokenizer and ``eos``, so it can follow a grammar (structured output).
    """
    loaded = tiny_loaded(model or tiny_model(), max_context=1024)
    if grammars:
        loaded = dataclasses.replace(loaded, tokenizer=real_tokenizer().hf, eos_token_ids=eos)
    runner, allocator = make_runner(loaded, kv_tokens=kv_tokens, block_size=16)
    scheduler = make_scheduler(
        "niyama", builtin_tier_config("default"), allocator, LatencyPredictor.reference("a100-llama3-8b")
    )
    return ReplicaParts(scheduler, worker(runner) if worker else runner, eos)


def one_replica(parts: ReplicaParts) -> ReplicaSet:
    """The engine of a server with one replica; a lost one is replaced by a fresh replica like it."""

    async def launch(index: int) -> ReplicaParts:
        return tiny_parts()

    return ReplicaSet([parts], launch, make_routing("slack"))


class ThreadedServer:
    """uvicorn serving ``app`` on 127.0.0.1 in a background thread."""

    def __init__(self, app) -> None:
        self.app = app
        options = server_options(app.state.niyama.settings)  # the same transport limits as `niyama serve`
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", **options))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    @property
    def state(self):
        return self.app.state.niyama


def tiny_server(
    tiers: TierConfig | None = None, parts: ReplicaParts | None = None, **settings: object
) -> ThreadedServer:
    options = dict(model_id="tiny-random-llama", max_input_tokens=512, max_total_tokens=1000)
    options.update(settings)
    app = create_app(
        one_replica(parts or tiny_parts()), real_tokenizer(), tiers or builtin_tier_config("default"),
        ServerSettings(**options), shutdown_grace_seconds=0.0,
    )  # fmt: skip
    return ThreadedServer(app)
