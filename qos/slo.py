"""Per-request SLO accounting, shared by the simulator and the router's metrics.

Given a request's targets (after overrides), its arrival and the time of each
token, it yields TTFT, the gaps between tokens, TTLT, and the objectives the
request violated:

- ``ttft``: the first token came after ``arrival + ttft``.
- ``tbt``: some token n >= 2 came after its deadline
  ``anchor + (n - 1) * tbt`` (see ``deadlines``), where the anchor is
  ``max(arrival + ttft, first token time)``. A single long gap is therefore not
  a violation when earlier tokens were early enough to cover it; the raw gaps
  are still reported as the TBT distribution.
- ``ttlt``: the last token came after ``arrival + ttlt``.

A request *misses* (for goodput) when it violates its primary objective:
``ttft`` for interactive tiers, ``ttlt`` for batch tiers. ``is_miss`` extends
that to every way a request can end, and is the one rule the server's
/metrics, the bench and the simulator's report all count by: a request the
server refused (``rejected``: 429, never fits the KV cache, no replica) or
failed (a failed step, a lost worker, shutdown) missed; one whose client left
(``cancelled``) is judged only if it had already violated its primary
objective when it left, and is otherwise left out of attainment. TBT
violations are reported beside misses, never as one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .deadlines import anchor, token_deadline
from .tiers import SloTargets

OBJECTIVES = ("ttft", "tbt", "ttlt")

# How a request ended, for the one definition of a miss (``is_miss``).
FINISHED = "finished"  # produced its last token (length, EOS, stop sequence)
FAILED = "failed"  # the server failed it after accepting it
REJECTED = "rejected"  # the server refused it before it started
CANCELLED = "cancelled"  # its client left (disconnected, stopped reading, a bench's early stop)
ENDS = (FINISHED, FAILED, REJECTED, CANCELLED)


def is_miss(end: str, primary_violated: bool = False) -> bool | None:
    """Whether a request that ended as ``end`` missed; None when it is not judged at all.

    ``primary_violated``: its primary objective was violated by the time it
    ended (`SloOutcome.missed` for a finished request, `SloTracker.primary_violated`
    at the moment a client left). Attainment is met / judged over the
    requests for which this is not None.
    """
    if end == FINISHED:
        return primary_violated
    if end in (FAILED, REJECTED):
        return True
    if end == CANCELLED:
        return True if primary_violated else None
    raise ValueError(f"unknown end {end!r}; one of {', '.join(ENDS)}")


@dataclass(frozen=True, slots=True)
class SloOutcome:
    ttft: float | None
    ttlt: float | None
    tbts: tuple[float, ...]
    tokens: int
    violations: tuple[str, ...]
    primary: str

    @property
    def missed(self) -> bool:
        return self.primary in self.violations


class SloTracker:
    """Incremental form: feed token times as they come, read the outcome at the end.

    Keeps O(1) state so a server (or a long simulation) need not store every
    token time; ``record`` returns the gap to the previous token for callers
    that keep a TBT histogram.
    """

    __slots__ = ("targets", "arrival", "first", "last", "tokens", "tbt_violated", "_anchor")

    def __init__(self, targets: SloTargets, arrival: float) -> None:
        self.targets = targets
        self.arrival = arrival
        self.first: float | None = None
        self.last: float | None = None
        self.tokens = 0
        self.tbt_violated = False
        self._anchor = 0.0

    def record(self, time: float) -> float | None:
        """Account one token produced at ``time``; the gap since the previous token, if any."""
        self.tokens += 1
        previous = self.last
        self.last = time
        if previous is None:
            self.first = time
            if self.targets.ttft is not None:
                self._anchor = anchor(self.arrival + self.targets.ttft, time)
            return None
        tbt = self.targets.tbt
        if tbt is not None and time > token_deadline(self._anchor, self.tokens, tbt):
            self.tbt_violated = True
        return time - previous

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.arrival

    @property
    def ttft_missed(self) -> bool:
        ttft = self.ttft
        return ttft is not None and self.targets.ttft is not None and ttft > self.targets.ttft

    def primary_violated(self, now: float) -> bool:
        """The primary objective is already violated at ``now``, whatever comes next.

        For a finished request with ``now`` its last token this is `SloOutcome.missed`;
        for one still running (or whose client just left) a deadline that passed without its token counts.
        """
        if self.targets.primary == "ttft":
            first = self.first if self.first is not None else now
            return first - self.arrival > self.targets.ttft
        return now - self.arrival > self.targets.ttlt

    def violations(self) -> tuple[str, ...]:
        found = []
        if self.ttft_missed:
            found.append("ttft")
        if self.tbt_violated:
            found.append("tbt")
        if self.last is not None and self.targets.ttlt is not None and self.last - self.arrival > self.targets.ttlt:
            found.append("ttlt")
        return tuple(found)

    def outcome(self, tbts: tuple[float, ...] = ()) -> SloOutcome:
        ttlt = None if self.last is None else self.last - self.arrival
        return SloOutcome(self.ttft, ttlt, tbts, self.tokens, self.violations(), self.targets.primary)


def evaluate(targets: SloTargets, arrival: float, token_times: Iterable[float]) -> SloOutcome:
    """The outcome of a request whose tokens came at ``token_times`` (in order)."""
    tracker = SloTracker(targets, arrival)
    gaps = [gap for gap in map(tracker.record, token_times) if gap is not None]
    return tracker.outcome(tuple(gaps))
