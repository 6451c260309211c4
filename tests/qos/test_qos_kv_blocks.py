"""The KV block ledger the scheduler allocates from."""

from __future__ import annotations

import pytest

from niyama.qos.kv_blocks import BlockAllocator, KVCapacityError, blocks_for


def test_blocks_for_rounds_up():
    assert [blocks_for(n, 16) for n in (0, 1, 16, 17, 32)] == [0, 1, 1, 2, 2]


def test_grow_is_lowest_first_and_incremental():
    allocator = BlockAllocator(8, 4)
    assert allocator.grow("a", 5) == (0, 1)
    assert allocator.grow("b", 4) == (2,)
    assert allocator.blocks_needed("a", 12) == 1 and allocator.can_grow("a", 12)
    assert allocator.grow("a", 12) == (0, 1, 3)
    assert allocator.grow("a", 9) == (0, 1, 3)  # never shrinks
    assert allocator.num_free == 4 and allocator.capacity_tokens == 32


def test_free_returns_blocks_for_reuse_first():
    allocator = BlockAllocator(8, 4)
    allocator.grow("a", 8)
    allocator.grow("b", 4)
    assert allocator.free("a") == 2
    assert allocator.free("a") == 0
    assert allocator.grow("c", 12) == (0, 1, 3)
    assert allocator.table("a") == () and allocator.holds("c") == 3


def test_over_commit_is_refused():
    allocator = BlockAllocator(2, 4)
    allocator.grow("a", 4)
    assert not allocator.can_grow("b", 8)
    with pytest.raises(KVCapacityError, match="needs 2 more KV blocks for 8 tokens but only 1 of 2 are free"):
        allocator.grow("b", 8)
    assert allocator.num_free == 1 and allocator.holds("b") == 0
