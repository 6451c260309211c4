"""What every route reaches through `request.app.state.niyama`."""

from __future__ import annotations

from dataclasses import dataclass

from niyama.engine.api import Engine
from niyama.qos.config import TierConfig

from .inference import Inference
from .metrics import Metrics
from .settings import ServerSettings
from .tokenizer import TextTokenizer


@dataclass
class ServerState:
    settings: ServerSettings
    tokenizer: TextTokenizer
    tiers: TierConfig
    engine: Engine
    metrics: Metrics
    inference: Inference
    run_config: dict | None = None  # the configuration it serves with, as /info reports it
    emulated: dict | None = None  # the emulated device (`niyama serve --emulate`), None on a real one
    openapi: dict | None = None  # built on first request
