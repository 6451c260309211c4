"""Markdown tables of bench results: per tier for one run, and per probe for a goodput search.

Also how the simulator benchmarks (qos_policies, replica_routing) print and
save their Markdown reports.

Inputs are the JSON-ready dicts that ``probe.ProbeResult.to_json`` and
``accounting.summarize`` produce, so a report can be rebuilt from a saved
``results.json`` alone.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

from niyama.engine.report import cell


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def _targets(entry: dict) -> str:
    return ", ".join(f"{name.upper()} {seconds:g} s" for name, seconds in entry["targets"].items())


def tier_table(summary: dict) -> list[str]:
    """One row per tier: counts, attainment, latency percentiles (seconds), output lengths achieved.

    ``rejected`` (429/503) and ``failed`` are among the ``misses``; results saved before refusals were counted
    apart show "-" rejected (their ``failed`` includes them).
    """
    headers = ["tier", "targets", "requests", "done", "rejected", "failed", "misses", "attain %", "TBT-miss %",
               "TTFT p50", "TTFT p99", "TBT p50", "TBT p99", "TTLT p50", "TTLT p99", "out/asked"]  # fmt: skip
    rows = [
        [
            name,
            _targets(e),
            e["requests"],
            e["completed"],
            e.get("rejected"),
            e["failed"],
            e["misses"],
            e["attainment_pct"],
            e["tbt_violation_pct"],
            e["ttft"]["p50"],
            e["ttft"]["p99"],
            e["tbt"]["p50"],
            e["tbt"]["p99"],
            e["ttlt"]["p50"],
            e["ttlt"]["p99"],
            e["output_length_ratio"],
        ]  # fmt: skip
        for name, e in summary["tiers"].items()
    ]
    total = (
        f"overall: {summary['requests']} requests, {summary['completed']} completed, "
        f"{cell(summary.get('rejected'))} rejected, {summary['misses']} missed "
        f"({summary['violation_pct']:.2f}%); {cell(summary['throughput_rps'])} req/s, "
        f"{cell(summary['output_tokens_per_s'], 1)} output tokens/s over {summary['wall_seconds']:.1f} s"
    )
    errors = {kind: n for e in summary["tiers"].values() for kind, n in e["errors"].items()}
    notes = [total] + ([f"errors: {', '.join(f'{k} x{n}' for k, n in errors.items())}"] if errors else [])
    return _table(headers, rows) + [""] + notes


def probes_table(probes: Sequence[dict]) -> list[str]:
    """One row per run of a goodput search (or any list of runs): rate, misses, ok."""
    headers = ["run", "rate (req/s)", "requests", "misses", "violation %", "ok", "throughput (req/s)", "note"]
    rows = []
    for probe in probes:
        summary = probe["summary"]
        undecided = summary.get("undecided", 0)  # absent from results written before it was counted
        note = f"stopped early: over the miss budget, {undecided} undecided" if probe["stopped_early"] else ""
        rows.append([probe["label"], probe["rate"], probe["planned_requests"], summary["misses"],
                     summary["violation_pct"], "yes" if probe["ok"] else "no",
                     summary["throughput_rps"], note])  # fmt: skip
    return _table(headers, rows)


def markdown(results: dict) -> str:
    """The whole ``summary.md`` of a ``niyama bench serve`` run."""
    config = results["config"]
    lines = ["# niyama bench serve", "", f"`{config['command']}`", ""]
    lines += [f"- {key}: {value}" for key, value in config.items() if key != "command"]
    goodput = results.get("goodput")
    if goodput is not None:
        closed = "" if goodput["bracketed"] else " (a lower bound: no failing rate was probed)"
        lines += ["", f"## Goodput: {goodput['rps']:.3f} req/s{closed}", ""]
        lines += probes_table(results["runs"])
    for run in results["runs"]:
        lines += ["", f"## {run['label']}", ""] + tier_table(run["summary"])
    return "\n".join(lines) + "\n"


def print_and_save(lines: list[str], started: float, jobs: int, output: str | None) -> None:
    """Print a simulator benchmark's report with its wall time since ``started``, and write it to ``output``."""
    lines = [*lines, f"\nWall time: {time.perf_counter() - started:.0f} s with {jobs} processes."]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if output:
        with open(output, "w", encoding="utf-8") as out:
            out.write(text)


def median_range(values: list[float], digits: int = 2) -> str:
    """``median (min–max)`` of runs (seeds, rounds), as the simulator and in-process benchmarks report them."""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"
