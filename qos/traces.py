"""Workload traces: request lengths, and arrival times when the trace has them.

Built-in names read the CSVs bundled in ``niyama.qos/data`` (see its
README). A path may hold any of three layouts, told apart by the header:

- ``TIMESTAMP,ContextTokens,GeneratedTokens`` (Azure LLM inference traces;
  timestamps as ``YYYY-MM-DD HH:MM:SS.fffffff`` or seconds),
- ``num_prefill_tokens,num_decode_tokens,...`` (lengths only),
- ``prompt_tokens,output_tokens[,arrival_s]`` (the simplest to write by hand).
"""

from __future__ import annotations

import csv
import datetime
import functools
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from .errors import TraceError
from .files import read_file

BUILTIN_TRACES = {
    "azure-code": "azure_code_2023.csv",
    "azure-conv": "azure_conv_2023.csv",
    "sharegpt": "sharegpt_lengths.csv",
    "arxiv": "arxiv_summarization_lengths.csv",
}
# header layout -> (prompt column, output column, time column or None)
LAYOUTS = (
    ("ContextTokens", "GeneratedTokens", "TIMESTAMP"),
    ("num_prefill_tokens", "num_decode_tokens", None),
    ("prompt_tokens", "output_tokens", "arrival_s"),
)


@dataclass(frozen=True)
class Trace:
    name: str
    prompt_lens: tuple[int, ...]
    output_lens: tuple[int, ...]
    times: tuple[float, ...] | None  # seconds since the first request, non-decreasing

    def __len__(self) -> int:
        return len(self.prompt_lens)

    @property
    def native_rate(self) -> float | None:
        """Requests per second of the recorded arrivals, None without timestamps."""
        if self.times is None or len(self.times) < 2 or self.times[-1] <= 0:
            return None
        return (len(self.times) - 1) / self.times[-1]


def load_trace(spec: str) -> Trace:
    """A built-in trace name or a CSV path."""
    if spec in BUILTIN_TRACES:
        return _builtin(spec)
    path = Path(spec)
    if path.suffix.lower() != ".csv" and not path.exists():
        raise TraceError(f"unknown trace {spec!r}: not a built-in ({', '.join(BUILTIN_TRACES)}) nor a CSV file")
    return read_file(path, "trace", TraceError, lambda text: parse_trace(text, str(path)))


@functools.cache
def _builtin(name: str) -> Trace:
    text = (files("niyama.qos") / "data" / BUILTIN_TRACES[name]).read_text(encoding="utf-8")
    return parse_trace(text, name)


def parse_trace(text: str, source: str) -> Trace:
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if not header:
        raise TraceError(f"{source}: empty trace")
    header = [column.strip() for column in header]
    for prompt_col, output_col, time_col in LAYOUTS:  # noqa: B007 - the matching layout is used below
        if prompt_col in header and output_col in header:
            break
    else:
        accepted = "; ".join(",".join(c for c in layout if c) for layout in LAYOUTS)
        raise TraceError(f"{source}:1: unrecognised header {','.join(header)!r}; expected columns {accepted}")
    p_index, o_index = header.index(prompt_col), header.index(output_col)
    t_index = header.index(time_col) if time_col in header else None
    prompts: list[int] = []
    outputs: list[int] = []
    stamps: list[float] = []
    for line, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise TraceError(f"{source}:{line}: expected {len(header)} columns, got {len(row)}")
        prompts.append(_positive_int(row[p_index], source, line, prompt_col))
        outputs.append(_positive_int(row[o_index], source, line, output_col))
        if t_index is not None:
            stamps.append(_timestamp(row[t_index], source, line, time_col))
            if len(stamps) > 1 and stamps[-1] < stamps[-2]:
                raise TraceError(f"{source}:{line}: {time_col} goes back in time")
    if not prompts:
        raise TraceError(f"{source}: the trace has no requests")
    times = tuple(t - stamps[0] for t in stamps) if stamps else None
    return Trace(source, tuple(prompts), tuple(outputs), times)


def _positive_int(cell: str, source: str, line: int, column: str) -> int:
    try:
        value = int(cell.strip())
    except ValueError:
        raise TraceError(f"{source}:{line}: {column}: expected a whole number, got {cell!r}") from None
    if value < 1:
        raise TraceError(f"{source}:{line}: {column}: expected at least 1 token, got {value}")
    return value


def _timestamp(cell: str, source: str, line: int, column: str) -> float:
    """Seconds: a number, or ``YYYY-MM-DD HH:MM:SS[.fraction]`` (any number of fraction digits)."""
    cell = cell.strip()
    try:
        return float(cell)
    except ValueError:
        pass
    try:
        day, clock = cell.replace("T", " ").split(" ")
        hours, minutes, seconds = clock.split(":")
        days = datetime.date.fromisoformat(day).toordinal()
        return days * 86400.0 + int(hours) * 3600.0 + int(minutes) * 60.0 + float(seconds)
    except ValueError:
        expected = "expected seconds or 'YYYY-MM-DD HH:MM:SS'"
        raise TraceError(f"{source}:{line}: {column}: {expected}, got {cell!r}") from None
