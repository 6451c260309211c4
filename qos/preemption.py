"""Which request gives way: to memory pressure, or to a more urgent prefill.

KV pressure: when the running decodes cannot all grow, a running request is
preempted (blocks freed, recomputed later from its prompt and generated
tokens). Baselines take the most recently admitted one, as vLLM does; Niyama
takes the least important tier first, then the most recently admitted.

Selective preemption: a partly prefilled request need not be continued
before a newer, more urgent one when waiting a step costs it nothing, i.e.
when it still makes its deadline after a whole step's worth of other prefill
work. Otherwise it stays at the front (stall-free batching's rule).
"""

from __future__ import annotations

from collections.abc import Iterable

from .state import RequestState


def kv_victim(running: Iterable[RequestState], importance_aware: bool) -> RequestState:
    if importance_aware:
        return min(running, key=lambda s: (s.rank, -s.admitted_seq))
    return max(running, key=lambda s: s.admitted_seq)


def may_wait(state: RequestState, now: float, prefill_rate: float, step_tokens: int) -> bool:
    return now + (step_tokens + state.remaining) / prefill_rate <= state.next_deadline
