"""KV-cache block accounting: the scheduler owns memory, the worker owns tensors.

Admission, preemption and the simulator all consult this one ledger, so the
scheduler can never promise the worker more blocks than exist.

A block is free, held by one or more requests (its reference count), or
cached: no request holds it but it keeps the KV of a known run of tokens
(`prefix_cache.block_keys`) until its memory is needed. A request that starts
with the same tokens takes such blocks instead of recomputing them
(`share`); a held block with a key is shared by every request that reads
it, and counted once. Cached blocks count as free: `grow` takes a truly free
block first, then evicts the cached one with the lowest `retention_key`. A
block some request holds is never evicted.
"""

from __future__ import annotations

from collections.abc import Sequence

from sortedcontainers import SortedList

from .prefix_cache import retention_key


class KVCapacityError(RuntimeError):
    """Raised when a request asks for more KV blocks than are free."""


def blocks_for(num_tokens: int, block_size: int) -> int:
    return -(-num_tokens // block_size)


class BlockAllocator:
    """A free list of fixed-size blocks, one block table per request, and the cache of released blocks.

    Blocks are handed out lowest id first and returned to the front of the
    list, so a run is deterministic and reuses warm blocks. ``now`` is the
    scheduler's clock (it sets it), the time of a block's last use.
    """

    def __init__(self, num_blocks: int, block_size: int, retention_seconds: float = 0.0) -> None:
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError(f"need a positive number of blocks and block size, got {num_blocks} x {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.retention_seconds = retention_seconds
        self.now = 0.0
        self.evictions = 0
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))
        self._tables: dict[str, list[int]] = {}
        self._refs = [0] * num_blocks
        self._key_of: dict[int, int] = {}  # block -> the key of the tokens whose KV it holds
        self._block_of: dict[int, int] = {}  # key -> block
        self._importance: dict[int, float] = {}  # keyed block -> highest importance of the tiers that used it
        self._cached = SortedList()  # (retention key, block) of keyed blocks no request holds
        self._cached_entry: dict[int, tuple[float, int]] = {}

    @property
    def num_free(self) -> int:
        """Blocks a request can take now: the free ones and the cached ones nobody holds."""
        return len(self._free) + len(self._cached)

    @property
    def num_cached(self) -> int:
        """Blocks that hold a reusable run of tokens, held or not."""
        return len(self._key_of)

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def blocks_needed(self, request_id: str, num_tokens: int) -> int:
        """Extra blocks ``request_id`` needs so that its table covers ``num_tokens``."""
        held = len(self._tables.get(request_id, ()))
        return max(0, blocks_for(num_tokens, self.block_size) - held)

    def can_grow(self, request_id: str, num_tokens: int) -> bool:
        return self.blocks_needed(request_id, num_tokens) <= self.num_free

    def grow(self, request_id: str, num_tokens: int) -> tuple[int, ...]:
        """Extend ``request_id``'s table to cover ``num_tokens`` positions."""
        needed = self.blocks_needed(request_id, num_tokens)
        if needed > self.num_free:
            raise KVCapacityError(
                f"request {request_id!r} needs {needed} more KV blocks for {num_tokens} tokens "
                f"but only {self.num_free} of {self.num_blocks} are free "
                f"(block size {self.block_size})"
            )
        table = self._tables.setdefault(request_id, [])
        for _ in range(needed):
            block = self._free.pop() if self._free else self._evict()
            self._refs[block] = 1
            table.append(block)
        return tuple(table)

    def cached_prefix(self, keys: Sequence[int]) -> int:
        """How many of ``keys``, from the first, are cached now (a request's reusable blocks, not taken)."""
        count = 0
        for key in keys:
            if key not in self._block_of:
                break
            count += 1
        return count

    def share(self, request_id: str, keys: Sequence[int], importance: float) -> int:
        """Start ``request_id``'s (empty) table with the cached blocks of its longest cached prefix of ``keys``.

        Returns how many blocks it took; each counts one more reader.
        """
        if self._tables.get(request_id):
            raise ValueError(f"request {request_id!r} already holds blocks")
        table = self._tables.setdefault(request_id, [])
        for key in keys[: self.cached_prefix(keys)]:
            block = self._block_of[key]
            if self._refs[block] == 0:
                self._cached.remove(self._cached_entry.pop(block))
            self._refs[block] += 1
            self._importance[block] = max(self._importance[block], importance)
            table.append(block)
        return len(table)

    def publish(self, request_id: str, index: int, key: int, importance: float) -> None:
        """Block ``index`` of ``request_id``'s table now holds the KV of the tokens ``key`` names.

        If another block already holds them (two requests computed the same
        prefix at once) that one stays the cached copy and this one is not keyed.
        """
        block = self._tables[request_id][index]
        if key in self._block_of or block in self._key_of:
            return
        self._key_of[block] = key
        self._block_of[key] = block
        self._importance[block] = importance

    def table(self, request_id: str) -> tuple[int, ...]:
        return tuple(self._tables.get(request_id, ()))

    def holds(self, request_id: str) -> int:
        return len(self._tables.get(request_id, ()))

    def free(self, request_id: str) -> int:
        """Release all of ``request_id``'s blocks; the number it held (0 if none).

        A block nobody else reads becomes free, or cached when it has a key.
        """
        table = self._tables.pop(request_id, [])
        for block in reversed(table):
            self._refs[block] -= 1
            if self._refs[block]:
                continue
            if block in self._key_of:
                entry = (retention_key(self.now, self._importance[block], self.retention_seconds), block)
                self._cached_entry[block] = entry
                self._cached.add(entry)
            else:
                self._free.append(block)
        return len(table)

    def _evict(self) -> int:
        _, block = self._cached.pop(0)
        del self._cached_entry[block]
        del self._block_of[self._key_of.pop(block)]
        del self._importance[block]
        self.evictions += 1
        return block
