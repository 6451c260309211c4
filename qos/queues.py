"""Per-tier waiting queues, sorted by priority, with a relegated queue per tier.

Entries are ``(key, seq, state, work)`` tuples in ``SortedList``s: the
unique arrival sequence number breaks ties, so states are never compared and
the order is deterministic; ``work`` is the state's remaining prefill when it
was queued (it cannot change while queued: only running requests compute).
Every operation is O(log n); walking the queues in global priority order
merges the per-tier heads lazily, so a step that looks at the first few
candidates never touches the other ten thousand. `work_before` (asked for
every routed request, on every replica) keeps each tier's total work, and
sums whichever side of the key is shorter: with deadlines as keys the new
request's key sits near one end of each tier's queue, so a backlog of ten
thousand requests costs a few entries, not ten thousand.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator

from sortedcontainers import SortedList

from .state import RequestState


class TierQueues:
    def __init__(self, num_tiers: int, ranks: list[int]) -> None:
        self._active = [SortedList() for _ in range(num_tiers)]
        self._relegated = [SortedList() for _ in range(num_tiers)]
        self._work = [0] * num_tiers  # remaining prefill queued in each active queue
        # Relegated requests are served most important tier first.
        self._relegated_order = sorted(range(num_tiers), key=lambda i: -ranks[i])

    def push(self, state: RequestState, key: float) -> None:
        entry = (key, state.seq, state, state.remaining)
        state.entry = entry
        (self._relegated if state.relegated else self._active)[state.tier_index].add(entry)
        if not state.relegated:
            self._work[state.tier_index] += entry[3]

    def remove(self, state: RequestState) -> None:
        (self._relegated if state.relegated else self._active)[state.tier_index].remove(state.entry)
        if not state.relegated:
            self._work[state.tier_index] -= state.entry[3]
        state.entry = None

    def ordered(self) -> Iterator[RequestState]:
        """Non-relegated waiting requests, lowest key first across all tiers."""
        queues = [q for q in self._active if q]
        if len(queues) == 1:
            return (entry[2] for entry in queues[0])
        return (entry[2] for entry in heapq.merge(*queues))

    def relegated_ordered(self) -> Iterator[RequestState]:
        """Relegated requests: most important tier first, then by key."""
        for index in self._relegated_order:
            for entry in self._relegated[index]:
                yield entry[2]

    def work_before(self, key: float) -> int:
        """Prefill tokens still to compute of the non-relegated waiting requests keyed at or before ``key``."""
        bound = (key, math.inf)  # sorts after every entry with this key, so states are never compared
        total = 0
        for queue, work in zip(self._active, self._work):
            cut = queue.bisect_right(bound)
            if cut <= len(queue) - cut:
                total += sum(entry[3] for entry in queue.islice(0, cut))
            else:
                total += work - sum(entry[3] for entry in queue.islice(cut))
        return total

    def rekey(self, key_of: Callable[[RequestState], float]) -> None:
        """Recompute every non-relegated key (the priority function changed)."""
        for index, queue in enumerate(self._active):
            entries = []
            for _, _, state, work in queue:
                state.entry = (key_of(state), state.seq, state, work)
                entries.append(state.entry)
            self._active[index] = SortedList(entries)

    def depth(self, tier_index: int) -> int:
        return len(self._active[tier_index])

    def relegated_depth(self, tier_index: int) -> int:
        return len(self._relegated[tier_index])

    def __len__(self) -> int:
        return sum(map(len, self._active)) + sum(map(len, self._relegated))
