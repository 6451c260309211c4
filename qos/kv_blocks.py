"""KV-cache block accounting: the scheduler owns memory, the worker owns tensors.

Admission, preemption and the simulator all consult this one ledger, so the
scheduler can never promise the worker more blocks than exist.
"""

from __future__ import annotations


class KVCapacityError(RuntimeError):
    """Raised when a request asks for more KV blocks than are free."""


def blocks_for(num_tokens: int, block_size: int) -> int:
    return -(-num_tokens // block_size)


class BlockAllocator:
    """A free list of fixed-size blocks and one block table per request.

    Blocks are handed out lowest id first and returned to the front of the
    list, so a run is deterministic and reuses warm blocks.
    """

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError(f"need a positive number of blocks and block size, got {num_blocks} x {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))
        self._tables: dict[str, list[int]] = {}

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def blocks_needed(self, request_id: str, num_tokens: int) -> int:
        """Extra blocks ``request_id`` needs so that its table covers ``num_tokens``."""
        held = len(self._tables.get(request_id, ()))
        return max(0, blocks_for(num_tokens, self.block_size) - held)

    def can_grow(self, request_id: str, num_tokens: int) -> bool:
        return self.blocks_needed(request_id, num_tokens) <= len(self._free)

    def grow(self, request_id: str, num_tokens: int) -> tuple[int, ...]:
        """Extend ``request_id``'s table to cover ``num_tokens`` positions."""
        needed = self.blocks_needed(request_id, num_tokens)
        if needed > len(self._free):
            raise KVCapacityError(
                f"request {request_id!r} needs {needed} more KV blocks for {num_tokens} tokens "
                f"but only {len(self._free)} of {self.num_blocks} are free "
                f"(block size {self.block_size})"
            )
        table = self._tables.setdefault(request_id, [])
        for _ in range(needed):
            table.append(self._free.pop())
        return tuple(table)

    def table(self, request_id: str) -> tuple[int, ...]:
        return tuple(self._tables.get(request_id, ()))

    def holds(self, request_id: str) -> int:
        return len(self._tables.get(request_id, ()))

    def free(self, request_id: str) -> int:
        """Return all of ``request_id``'s blocks; the number returned (0 if it held none)."""
        table = self._tables.pop(request_id, [])
        self._free.extend(reversed(table))
        return len(table)
