"""Reading a file qos is given (a tier file, a run file, a latency profile, a trace), or one line saying why not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

Parsed = TypeVar("Parsed")


def read_file(
    path: Path, what: str, error: type[ValueError], parse: Callable[[str], Parsed],
    syntax_errors: tuple[type[Exception], ...] = (), syntax: str = "",
) -> Parsed:  # fmt: skip
    """``parse`` of the file's text; ``error`` naming the file when it cannot be read, decoded or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a UTF-8 text file") from None
    try:
        return parse(text)
    except syntax_errors as exc:
        raise error(f"{path}: not valid {syntax}: {exc}") from None
