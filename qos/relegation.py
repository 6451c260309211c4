"""Eager relegation: give up early on requests that will miss anyway.

Serving a request that is bound to miss its deadline spends capacity that
would let the requests behind it make theirs (EDF's domino effect under
overload). Walking the serving order, the cumulative prefill work ahead of
each request, at the observed prefill rate, predicts when it would get its
first token. When a request that has not started would miss, the least
important request walked so far that has not started is relegated (behind
every non-relegated request; it still completes from leftover capacity), and
the prediction is redone without its work. Ties go to the one furthest back,
so within a tier the request predicted to miss is the one relegated. A more
important request is never relegated to save a less important one.

Started requests (partial prefills, preempted ones) add their work but are
neither relegated nor the cause of a relegation: a partial prefill protects
itself (selective preemption pins it when it cannot wait).
"""

from __future__ import annotations

from collections.abc import Iterable

from .state import RequestState


def choose_relegations(queue: Iterable[RequestState], now: float, prefill_rate: float) -> list[RequestState]:
    """Requests to relegate among ``queue``, a head window of the serving order."""
    victims: list[RequestState] = []
    walked: list[RequestState] = []
    work = 0
    for state in queue:
        walked.append(state)
        work += state.remaining
        if state.started:
            continue
        deadline = state.next_deadline
        while now + work / prefill_rate > deadline:
            victim = None
            for candidate in walked:
                if not candidate.started and candidate.rank <= state.rank:
                    if victim is None or candidate.rank <= victim.rank:
                        victim = candidate
            victims.append(victim)
            walked.remove(victim)
            work -= victim.remaining
            if victim is state:
                break
    return victims
