"""`niyama serve --json-output`: every log line of the server process one JSON object, as TGI's.

TGI logs through `tracing_subscriber`'s JSON layer with the event flattened:
`{"timestamp": "2025-01-01T12:00:00.123456Z", "level": "INFO", "message":
"...", "target": "text_generation_router::server", "filename": "...",
"line_number": 123}`. Log shippers (Datadog, Loki, Cloud Logging) key on
those names, so the server writes the same ones, with the Python logger's
name as `target` and an `exception` field for a traceback. uvicorn's own
loggers (start-up, errors, access lines) go through the same handler.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson
from uvicorn.config import LOGGING_CONFIG

# tracing's level names (it says WARN, not WARNING)
LEVELS = {"WARNING": "WARN", "CRITICAL": "ERROR"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One compact JSON object per record, with TGI's field names."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        entry: dict[str, object] = {
            "timestamp": stamp,
            "level": LEVELS.get(record.levelname, record.levelname),
            "message": record.getMessage(),
            "target": record.name,
            "filename": record.pathname,
            "line_number": record.lineno,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(level: str, json_output: bool) -> dict | None:
    """Set up the process's logging; returns the `log_config` to give uvicorn (None: the root handler set here)."""
    if not json_output:
        logging.basicConfig(level=level.upper(), format=TEXT_FORMAT)
        return LOGGING_CONFIG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    return None

