"""Per-tier waiting queues, sorted by priority, with a relegated queue per tier.

Entries are ``(key, seq, state)`` tuples in ``SortedList``s: the unique
arrival sequence number breaks ties, so states are never compared and the
order is deterministic. Every operation is O(log n); walking the queues in
global priority order merges the per-tier heads lazily, so a step that looks
at the first few candidates never touches the other ten thousand.
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
        # Relegated requests are served most important tier first.
        self._relegated_order = sorted(range(num_tiers), key=lambda i: -ranks[i])

    def push(self, state: RequestState, key: float) -> None:
        entry = (key, state.seq, state)
        state.entry = entry
        (self._relegated if state.relegated else self._active)[state.tier_index].add(entry)

    def remove(self, state: RequestState) -> None:
        (self._relegated if state.relegated else self._active)[state.tier_index].remove(state.entry)
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
        return sum(entry[2].remaining for queue in self._active for entry in queue.irange(maximum=bound))

    def rekey(self, key_of: Callable[[RequestState], float]) -> None:
        """Recompute every non-relegated key (the priority function changed)."""
        for index, queue in enumerate(self._active):
            states = [entry[2] for entry in queue]
            entries = []
            for state in states:
                state.entry = (key_of(state), state.seq, state)
                entries.append(state.entry)
            self._active[index] = SortedList(entries)

    def depth(self, tier_index: int) -> int:
        return len(self._active[tier_index])

    def relegated_depth(self, tier_index: int) -> int:
        return len(self._relegated[tier_index])

    def __len__(self) -> int:
        return sum(map(len, self._active)) + sum(map(len, self._relegated))
