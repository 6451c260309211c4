"""How many tokens one step may carry.

Fixed chunking (the baselines, Sarathi-style) uses a constant budget. Dynamic
chunking asks the predictor for the largest step that still lets the most
urgent running decode meet its next-token deadline: when decodes have slack,
big steps amortise the step's fixed cost (about 2x the throughput of 256-token
steps on the reference model); when they have none, steps shrink.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Predict = Callable[[int, int, int, int], float]


def dynamic_step_tokens(
    predict: Predict,
    sizes: Sequence[int],
    margin: float,
    slack: float | None,
    decode_tokens: int,
    decode_context: int,
    prefill_offset: int,
    cap: int | None = None,
) -> int:
    """The largest total step size in ``sizes`` (at most ``cap``) whose predicted time x margin fits ``slack``.

    ``slack`` is the earliest next-token deadline of the running decodes minus
    now (None when no decode has a TBT objective: any size fits). With no or
    negative slack, or when even the smallest size is too slow, the smallest
    size is used so the step still makes progress. The step's prefill context
    is estimated as one chunk that continues at ``prefill_offset`` (the first
    prefill candidate's computed positions).
    """
    allowed = [size for size in sizes if cap is None or size <= cap] or [sizes[0]]
    if slack is None:
        return allowed[-1]
    if slack <= 0:
        return allowed[0]
    for size in reversed(allowed):
        prefill = max(0, size - decode_tokens)
        seconds = predict(prefill, decode_tokens, decode_context, prefill_offset + prefill if prefill else 0)
        if seconds * margin <= slack:
            return size
    return allowed[0]
