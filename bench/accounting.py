"""From client-side token times to SLO outcomes and per-tier summaries.

Each finished request is judged by ``niyama.qos.slo.evaluate`` with its
tier's targets and its send time as arrival, so a miss here is a miss in
the simulator and in the server's own ``/metrics``: TTFT for interactive
tiers, TTLT for batch tiers (TBT deadline misses are reported apart, as in
the paper). A request that failed or never finished counts as a miss, as a
rejected request does in the simulator; one cancelled by a goodput probe's
early stop before its fate was known is ``undecided`` and left out.

While a run is going, ``certain_misses`` counts the requests already bound
to miss (failed, or past their primary deadline without meeting it), so a
goodput probe can stop as soon as its miss budget is spent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from niyama.engine.report import percentile
from niyama.qos.config import TierConfig
from niyama.qos.slo import SloOutcome, evaluate
from niyama.qos.tiers import SloTargets

from .client import Record

QUANTILES = (50, 90, 99)
STOPPED_MISSED = "stopped: the miss budget was spent (this request had already missed)"
STOPPED_UNDECIDED = "stopped: the miss budget was spent (undecided)"


def outcome(record: Record, targets: SloTargets) -> SloOutcome | None:
    """The SLO outcome of a request that finished cleanly; None for a failed one (a miss)."""
    if not record.ok or record.sent is None:
        return None
    return evaluate(targets, record.sent, record.token_times)


def missed(record: Record, targets: SloTargets) -> bool:
    result = outcome(record, targets)
    return result is None or result.missed


def certainly_missed(record: Record, targets: SloTargets, now: float) -> bool:
    """Already a miss, whatever comes next (a request still streaming may be one)."""
    if record.sent is None:
        return False
    if record.done:
        return missed(record, targets)
    if record.error is not None:
        return True
    if targets.primary == "ttft":
        first = record.token_times[0] if record.token_times else now
        return first - record.sent > targets.ttft
    return now - record.sent > targets.ttlt


def certain_misses(records: Iterable[Record], tiers: TierConfig, now: float) -> int:
    return sum(certainly_missed(r, tiers.tier(r.request.tier).targets, now) for r in records)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 3) if whole else 0.0


def _distribution(values: Sequence[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    stats = {f"p{q}": _round(percentile(ordered, q)) for q in QUANTILES}
    stats["mean"] = _round(sum(ordered) / len(ordered)) if ordered else None
    stats["max"] = _round(ordered[-1]) if ordered else None
    return stats


def tier_summary(records: Sequence[Record], targets: SloTargets) -> dict:
    """Counts, misses, attainment, latency distributions and lengths of one tier's requests.

    Requests cancelled undecided by an early stop are counted apart (``undecided``) and left out of
    everything else: they neither met nor missed their target.
    """
    undecided = sum(r.error == STOPPED_UNDECIDED for r in records)
    records = [r for r in records if r.error != STOPPED_UNDECIDED]
    outcomes = [outcome(r, targets) for r in records]
    finished = [o for o in outcomes if o is not None]
    misses = sum(o is None or o.missed for o in outcomes)
    tbt_misses = sum("tbt" in o.violations for o in finished)
    asked = sum(r.request.output_tokens for r in records)
    got = sum(len(r.token_times) for r in records)
    errors: dict[str, int] = {}
    for record in records:
        if record.error is not None:
            kind = record.error.split(":")[0]
            errors[kind] = errors.get(kind, 0) + 1
    return {
        "targets": {k: v for k, v in (("ttft", targets.ttft), ("tbt", targets.tbt), ("ttlt", targets.ttlt)) if v},
        "primary": targets.primary,
        "requests": len(records),
        "undecided": undecided,
        "completed": len(finished),
        "failed": len(records) - len(finished),
        "misses": misses,
        "violation_pct": _pct(misses, len(records)),
        "attainment_pct": round(100.0 - _pct(misses, len(records)), 3) if records else None,
        "tbt_violation_pct": _pct(tbt_misses, len(finished)),
        "ttft": _distribution([o.ttft for o in finished if o.ttft is not None]),
        "tbt": _distribution([gap for o in finished for gap in o.tbts]),
        "ttlt": _distribution([o.ttlt for o in finished if o.ttlt is not None]),
        "prompt_tokens_mean": _round(sum(r.prompt_tokens for r in records) / len(records), 2) if records else None,
        "output_tokens_asked": asked,
        "output_tokens_received": got,
        "output_length_ratio": _round(got / asked) if asked else None,
        "errors": errors,
    }


def summarize(records: Sequence[Record], tiers: TierConfig, wall_seconds: float) -> dict:
    """Per tier and overall; throughput over ``wall_seconds`` (first send to last answer)."""
    per_tier = {}
    misses = 0
    for tier in tiers.tiers:
        own = [r for r in records if r.request.tier == tier.name]
        if own:
            per_tier[tier.name] = tier_summary(own, tier.targets)
            misses += per_tier[tier.name]["misses"]
    undecided = sum(r.error == STOPPED_UNDECIDED for r in records)
    records = [r for r in records if r.error != STOPPED_UNDECIDED]
    completed = [r for r in records if r.ok]
    output = sum(len(r.token_times) for r in completed)
    return {
        "tiers": per_tier,
        "requests": len(records),
        "undecided": undecided,
        "completed": len(completed),
        "misses": misses,
        "violation_pct": _pct(misses, len(records)),
        "attainment_pct": round(100.0 - _pct(misses, len(records)), 3) if records else None,
        "wall_seconds": round(wall_seconds, 3),
        "throughput_rps": _round(len(completed) / wall_seconds) if wall_seconds > 0 else None,
        "output_tokens_per_s": _round(output / wall_seconds, 2) if wall_seconds > 0 else None,
        "input_tokens_per_s": _round(sum(r.prompt_tokens for r in completed) / wall_seconds, 2)
        if wall_seconds > 0
        else None,
    }
