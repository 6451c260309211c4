"""The latency predictor `niyama serve` starts with: given, or measured once per model and device.

With no `--latency-profile`, the server profiles the model on this device at
start-up (the small `STARTUP` grid: under a minute on a CPU, seconds on a GPU) and caches the
result under `$NIYAMA_CACHE/profiles/` (default `~/.cache/niyama/profiles/`),
keyed by checkpoint, device and dtype, so only the first start pays for it.
The predictor then keeps correcting itself online from the steps it sees.
"""

from __future__ import annotations

from niyama.qos.predictor import LatencyPredictor
from niyama.worker.loading import LoadedModel
from niyama.worker.profile import cached_profile


def startup_predictor(spec: str | None, loaded: LoadedModel) -> LatencyPredictor:
    """``spec`` (a reference name or a profile JSON), else the cached profile of this model and device."""
    if spec is not None:
        return LatencyPredictor.load(spec)
    return LatencyPredictor.from_profile(cached_profile(loaded))
