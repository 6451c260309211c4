"""Human durations in configuration files: "500ms", "2s", "10m", "1h" or plain seconds."""

from __future__ import annotations

import math
import re

_UNIT_SECONDS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")


def parse_duration(value: object) -> float:
    """Seconds from a number or a string with a unit; raise ``ValueError`` unless finite and > 0.

    A bare number (TOML int or float, or a numeric string) means seconds.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like \"500ms\", \"2s\", \"10m\" or seconds, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match is None:
            raise ValueError(f"expected a duration like \"500ms\", \"2s\", \"10m\" or seconds, got {value!r}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    else:
        raise ValueError(f"expected a duration like \"500ms\", \"2s\", \"10m\" or seconds, got {value!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling, for tables and messages ("50ms", "6s", "10m")."""
    for unit, scale in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        count = seconds / scale
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"
