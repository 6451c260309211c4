"""What every route reaches through `request.app.state.niyama`."""

from __future__ import annotations

from dataclasses import dataclass

from niyama.qos.config import TierConfig

from .engine import AsyncEngine
from .inference import Inference
from .metrics import Metrics
from .settings import ServerSettings
from .tokenizer import TextTokenizer


@dataclass
class ServerState:
    settings: ServerSettings
    tokenizer: TextTokenizer
    tiers: TierConfig
    engine: AsyncEngine
    metrics: Metrics
    inference: Inference
    openapi: dict | None = None  # built on first request
