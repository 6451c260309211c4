"""A request's side of prefix caching: what it may reuse, taking it at admission, publishing what it computed.

A queued request only expects its cached prefix (``reusable``, refreshed at
intake and when it is preempted), so the queues, relegation and the front
router see the work really left without pinning blocks it may wait long for.
It takes the blocks when it is admitted; by then some may have been evicted,
and it computes those. Every block it fills with known tokens is published,
generated tokens included, so the next turn of a conversation (its prompt is
this one plus the answer) starts after the answer.
"""

from __future__ import annotations

from .kv_blocks import BlockAllocator
from .prefix_cache import ROOT_KEY, block_keys, reusable_blocks
from .state import RequestState


def enroll(state: RequestState, allocator: BlockAllocator) -> None:
    """At intake: ``state`` shares blocks from now on (its request names its prompt tokens)."""
    state.tokens = list(state.request.prompt_ids)
    state.keys = block_keys(state.tokens, allocator.block_size, len(state.tokens) // allocator.block_size)
    expect(state, allocator)


def expect(state: RequestState, allocator: BlockAllocator) -> None:
    """Set the tokens a queued ``state`` would find cached now (at intake, after a preemption)."""
    state.published = state.reusable = 0
    if state.tokens is None:
        return
    usable = state.keys[: reusable_blocks(state.known, allocator.block_size)]
    state.reusable = allocator.cached_prefix(usable) * allocator.block_size


def take(state: RequestState, allocator: BlockAllocator, importance: float) -> int:
    """Start an admitted request's table with its cached prefix; the tokens it need not compute."""
    if state.tokens is None:
        return 0
    usable = state.keys[: reusable_blocks(state.known, allocator.block_size)]
    blocks = allocator.share(state.id, usable, importance)
    state.table = allocator.table(state.id)
    state.capacity = state.computed = state.reused = blocks * allocator.block_size
    state.published = blocks
    state.reusable = 0
    return state.reused


def requeue(state: RequestState, allocator: BlockAllocator) -> None:
    """Give back every block it holds (preempted, or admitted with no room after all): it waits, holding nothing."""
    allocator.free(state.id)
    state.table, state.capacity, state.computed, state.reused = (), 0, 0, 0
    expect(state, allocator)


def record(
    state: RequestState, sampled: bool, token_id: int | None, allocator: BlockAllocator, importance: float
) -> None:
    """After a step: a sampled token joins its tokens, and its full computed blocks are published.

    A step result that does not say which token was sampled (a test's empty
    result) ends sharing for the request: keys of unknown tokens would be wrong.
    """
    if state.tokens is None:
        return
    size = allocator.block_size
    if sampled:
        if token_id is None:
            state.tokens = None
            return
        state.tokens.append(token_id)
        full = len(state.tokens) // size
        if full > len(state.keys):
            parent = state.keys[-1] if state.keys else ROOT_KEY
            state.keys += block_keys(state.tokens[len(state.keys) * size :], size, full - len(state.keys), parent)
    for index in range(state.published, min(state.computed // size, len(state.keys))):
        allocator.publish(state.id, index, state.keys[index], importance)
    state.published = max(state.published, min(state.computed // size, len(state.keys)))
