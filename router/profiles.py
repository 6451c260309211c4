"""The latency predictor `niyama serve` starts with: given, or measured once per model and device.

With no `--latency-profile`, the server profiles the model on this device at
start-up (the small `STARTUP` grid: under a minute on a CPU, seconds on a GPU) and caches the
result under `$NIYAMA_CACHE/profiles/` (default `~/.cache/niyama/profiles/`),
keyed by checkpoint, device and dtype, so only the first start pays for it.
The predictor then keeps correcting itself online from the steps it sees.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

from niyama.qos.predictor import LatencyPredictor
from niyama.worker.loading import LoadedModel, cache_root
from niyama.worker.profile import STARTUP, device_name, run_profile, shapes

log = logging.getLogger("niyama.serve")


def profile_path(loaded: LoadedModel) -> Path:
    dtype = str(loaded.dtype).removeprefix("torch.")
    key = f"{loaded.path.name}-{device_name(loaded.device)}-{dtype}"
    return cache_root() / "profiles" / (re.sub(r"[^A-Za-z0-9_.-]+", "_", key) + ".json")


def startup_predictor(spec: str | None, loaded: LoadedModel) -> LatencyPredictor:
    """``spec`` (a reference name or a profile JSON), else the cached profile of this model and device."""
    if spec is not None:
        return LatencyPredictor.load(spec)
    path = profile_path(loaded)
    if not path.is_file():
        log.info("no latency profile for this model and device yet: profiling now (%d step shapes), once",
                 len(shapes(STARTUP, loaded.max_context)))  # fmt: skip
        started = time.monotonic()
        profile = run_profile(loaded, STARTUP, progress=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(".tmp")
        staging.write_text(json.dumps(profile, indent=1) + "\n")
        staging.replace(path)
        log.info("profiled %d step shapes in %.0f s; cached in %s", len(profile["samples"]),
                 time.monotonic() - started, path)  # fmt: skip
    else:
        log.info("latency profile: %s (cached)", path)
    return LatencyPredictor.from_profile(path)
