"""Summaries of a simulation: the JSON object and the human table.

Per tier: ``count`` (requests that arrived), ``completed``, ``rejected``
(never fit the KV cache), ``misses`` and ``attainment_pct`` by
``qos.slo.is_miss`` (the rule the server's /metrics and the bench count by:
missing the primary target, TTFT for interactive and TTLT for batch, or
being rejected), ``relegated`` (ever relegated), ``prompt_cache_hit_pct``
(prompt tokens at admission found in the prefix cache), TTFT / TBT / TTLT
percentiles in seconds (TBT over every gap between consecutive tokens),
``violation_pct`` (misses / count) and
``tbt_violation_pct`` (share with any token after its TBT deadline,
reported apart as the paper does). Overall: the same violation shares,
``throughput_tokens_per_s`` (prefill plus decode tokens computed, per
simulated second), ``mean_step_tokens``, ``steps`` and ``kv_evictions``.
"""

from __future__ import annotations

from collections.abc import Sequence

from niyama.qos.slo import FINISHED, REJECTED, is_miss

from .simulator import SimResult

QUANTILES = (50, 95, 99)


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default) of sorted values."""
    if not ordered:
        return None
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 4) if whole else 0.0


def summarize(result: SimResult) -> dict:
    tiers = {}
    total = misses = tbt_misses = 0
    for name, record in result.tiers.items():
        outcomes = record.outcomes
        count = len(outcomes) + record.rejected
        missed = sum(is_miss(FINISHED, o.missed) for o in outcomes) + record.rejected * is_miss(REJECTED)
        tbt_missed = sum("tbt" in o.violations for o in outcomes)
        cache = result.stats.tiers[name]
        entry: dict = {
            "count": count,
            "completed": len(outcomes),
            "rejected": record.rejected,
            "misses": missed,
            "attainment_pct": round(100.0 - _pct(missed, count), 4) if count else None,
            "relegated": result.stats.tiers[name].relegated_total,
            "prompt_cache_hit_pct": _pct(
                cache.prompt_tokens_cached, cache.prompt_tokens_cached + cache.prompt_tokens_computed
            ),
        }
        series = {
            "ttft": sorted(o.ttft for o in outcomes if o.ttft is not None),
            "tbt": sorted(record.tbts),
            "ttlt": sorted(o.ttlt for o in outcomes if o.ttlt is not None),
        }
        for metric, values in series.items():
            for q in QUANTILES:
                entry[f"{metric}_p{q}"] = _round(percentile(values, q))
        entry["violation_pct"] = _pct(missed, count)
        entry["tbt_violation_pct"] = _pct(tbt_missed, len(outcomes))
        tiers[name] = entry
        total += count
        misses += missed
        tbt_misses += tbt_missed
    return {
        "tiers": tiers,
        "requests": total,
        "violation_pct": _pct(misses, total),
        "tbt_violation_pct": _pct(tbt_misses, total),
        "throughput_tokens_per_s": round(result.tokens / result.end_time, 3) if result.end_time else 0.0,
        "mean_step_tokens": round(result.tokens / result.steps, 3) if result.steps else 0.0,
        "steps": result.steps,
        "simulated_seconds": round(result.end_time, 3),
        "kv_evictions": result.stats.evictions,
    }


def cell(value: object, digits: int = 3) -> str:
    """A table cell: "-" for nothing, floats to ``digits`` places."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(summary: dict) -> str:
    """A fixed-width table, one row per tier, then the overall line."""
    columns = ["count", "completed", "rejected", "misses", "relegated", "violation_pct", "tbt_violation_pct",
               "ttft_p50", "ttft_p99", "tbt_p50", "tbt_p99", "ttlt_p50", "ttlt_p99"]  # fmt: skip
    headers = ["tier", *(c.replace("_violation_pct", " viol%").replace("violation_pct", "viol%") for c in columns)]
    rows = [[name, *(cell(entry[c]) for c in columns)] for name, entry in summary["tiers"].items()]
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in [headers, *rows]]
    lines.append(
        f"overall: {summary['requests']} requests, {summary['violation_pct']:.2f}% missed their target "
        f"({summary['tbt_violation_pct']:.2f}% a TBT deadline), {summary['throughput_tokens_per_s']:.0f} tokens/s, "
        f"{summary['mean_step_tokens']:.0f} tokens/step over {summary['steps']} steps, "
        f"{summary['simulated_seconds']:.0f} s simulated"
    )
    return "\n".join(lines)
