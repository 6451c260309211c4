"""The KV block ledger: tables grow block by block, freeing returns every block, over-asking is refused."""

import pytest

from niyama.qos.kv_blocks import BlockAllocator, KVCapacityError


def test_tables_grow_by_whole_blocks_and_free_returns_them():
    ledger = BlockAllocator(num_blocks=6, block_size=4)
    assert ledger.grow("a", 5) == (0, 1)
    assert ledger.grow("a", 8) == (0, 1)  # still covered
    assert ledger.grow("b", 1) == (2,)
    assert ledger.grow("a", 9) == (0, 1, 3)
    assert ledger.num_free == 2
    assert ledger.free("a") == 3
    assert ledger.num_free == 5
    assert ledger.grow("c", 12) == (0, 1, 3)  # lowest ids first, reused
    assert ledger.free("missing") == 0


def test_over_asking_is_refused_with_the_numbers_and_changes_nothing():
    ledger = BlockAllocator(num_blocks=3, block_size=16)
    ledger.grow("a", 20)
    assert not ledger.can_grow("b", 33)
    with pytest.raises(
        KVCapacityError, match=r"request 'b' needs 3 more KV blocks for 33 tokens but only 1 of 3 are free"
    ):
        ledger.grow("b", 33)
    assert ledger.num_free == 1
    assert ledger.table("b") == ()


def test_invalid_sizes_are_rejected():
    with pytest.raises(ValueError):
        BlockAllocator(0, 16)
