"""The scheduler's KV memory arithmetic: may a request start, how far can it go, do the decodes fit, growing a table."""

from __future__ import annotations

import math
from collections.abc import Collection

from .kv_blocks import BlockAllocator, blocks_for
from .policy import PolicyConfig
from .state import RequestState


def may_admit(
    state: RequestState,
    running: int,
    prefilling: Collection[RequestState],
    allocator: BlockAllocator,
    config: PolicyConfig,
) -> bool:
    """Start (or restart) a queued request only if its whole known context fits beside the ``running`` ones.

    Partial prefills' outstanding blocks and a small watermark stay
    reserved, so newcomers do not strand the requests already started.
    """
    if not running:
        return True
    if config.max_running is not None and running >= config.max_running:
        return False
    size = allocator.block_size
    reserved = sum(blocks_for(s.known, size) - len(s.table) for s in prefilling)
    watermark = math.ceil(config.kv_watermark * allocator.num_blocks)
    return allocator.num_free >= blocks_for(state.known, size) + reserved + watermark


def affordable(state: RequestState, allocator: BlockAllocator) -> int:
    """Tokens ``state`` can compute now with the blocks it holds and the free ones."""
    return state.capacity + allocator.num_free * allocator.block_size - state.computed


def decodes_fit(decoding: Collection[RequestState], allocator: BlockAllocator) -> bool:
    """Every running decode can take its next position (each needs at most one block)."""
    if len(decoding) <= allocator.num_free:
        return True
    return sum(1 for s in decoding if s.computed >= s.capacity) <= allocator.num_free


def grow(state: RequestState, end: int, allocator: BlockAllocator) -> None:
    """Blocks for positions up to ``end`` in ``state``'s table."""
    state.table = allocator.grow(state.id, end)
    state.capacity = len(state.table) * allocator.block_size
