"""From client-side token times to SLO outcomes and per-tier summaries.

Each request is judged by ``niyama.qos.slo.is_miss``, the rule the
server's ``/metrics`` and the simulator's report count by: a finished one
by ``qos.slo.evaluate`` with its tier's targets and its send time as
arrival (TTFT for interactive tiers, TTLT for batch tiers; TBT deadline
misses are reported apart, as in the paper); one the server refused
(``rejected``: HTTP 429 or 503) or that failed or never finished (any other
error, the drain timeout included) is a miss, as a rejected request is in
the simulator; one cancelled by a goodput probe's early stop is a miss if it
had already missed, else ``undecided`` and left out.

While a run is going, ``certain_misses`` counts the requests already bound
to miss (failed, or past their primary deadline without meeting it), so a
goodput probe can stop as soon as its miss budget is spent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from niyama.engine.report import percentile
from niyama.qos.config import TierConfig
from niyama.qos.slo import CANCELLED, FAILED, FINISHED, REJECTED, SloOutcome, SloTracker, evaluate, is_miss
from niyama.qos.tiers import SloTargets

from .client import Record

QUANTILES = (50, 90, 99)
STOPPED_MISSED = "stopped: the miss budget was spent (this request had already missed)"
STOPPED_UNDECIDED = "stopped: the miss budget was spent (undecided)"
REFUSED = ("HTTP 429", "HTTP 503")  # the server refused the request before it started (overloaded, unavailable)


def outcome(record: Record, targets: SloTargets) -> SloOutcome | None:
    """The SLO outcome of a request that finished cleanly; None for a failed one (a miss)."""
    if not record.ok or record.sent is None:
        return None
    return evaluate(targets, record.sent, record.token_times)


def ended_as(record: Record) -> str:
    """How an ended request ended, in ``qos.slo``'s terms (the bench's early stop is its client leaving)."""
    if record.error in (STOPPED_MISSED, STOPPED_UNDECIDED):
        return CANCELLED
    if record.error is not None and record.error.startswith(REFUSED):
        return REJECTED
    return FINISHED if record.ok else FAILED


def judged_miss(record: Record, targets: SloTargets) -> bool | None:
    """``is_miss`` of an ended request; None when it is not judged (undecided)."""
    end = ended_as(record)
    if end == FINISHED:
        return is_miss(end, outcome(record, targets).missed)
    return is_miss(end, record.error == STOPPED_MISSED)  # the runner judged it when it stopped


def missed(record: Record, targets: SloTargets) -> bool:
    return judged_miss(record, targets) is True


def certainly_missed(record: Record, targets: SloTargets, now: float) -> bool:
    """Already a miss, whatever comes next (a request still streaming may be one)."""
    if record.sent is None:
        return False
    if record.done:
        return missed(record, targets)
    if record.error is not None:
        return True
    tracker = SloTracker(targets, record.sent)
    if record.token_times:
        tracker.record(record.token_times[0])  # all the primary objective needs of a running request
    return tracker.primary_violated(now)


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
    everything else: they neither met nor missed their target. ``rejected`` (refused with 429 or 503)
    and ``failed`` (any other error) are misses, counted apart as well.
    """
    undecided = sum(judged_miss(r, targets) is None for r in records)
    records = [r for r in records if judged_miss(r, targets) is not None]
    outcomes = [outcome(r, targets) for r in records]
    finished = [o for o in outcomes if o is not None]
    misses = sum(judged_miss(r, targets) for r in records)
    rejected = sum(ended_as(r) == REJECTED for r in records)
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
        "rejected": rejected,
        "failed": len(records) - len(finished) - rejected,
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
    for tier in tiers.tiers:
        own = [r for r in records if r.request.tier == tier.name]
        if own:
            per_tier[tier.name] = tier_summary(own, tier.targets)
    misses, rejected, undecided = (
        sum(e[key] for e in per_tier.values()) for key in ("misses", "rejected", "undecided")
    )
    records = [r for r in records if judged_miss(r, tiers.tier(r.request.tier).targets) is not None]
    completed = [r for r in records if r.ok]
    output = sum(len(r.token_times) for r in completed)
    return {
        "tiers": per_tier,
        "requests": len(records),
        "undecided": undecided,
        "completed": len(completed),
        "rejected": rejected,
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
