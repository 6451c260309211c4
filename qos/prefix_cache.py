"""What makes a KV block reusable by another request, and which cached block goes first.

A full block's KV depends on its tokens and on every token before it, so its
key chains its tokens to the key of the block before (vLLM's hashed blocks).
Two requests whose prompts start with the same tokens get the same keys for
those blocks, whatever their tiers, and the second starts from the first's
KV. Python's hash of a tuple of ints is the same in every process and run, so
the keys are deterministic (the simulator and the tests rely on it).

Cached blocks that no request reads are evicted lowest `retention_key` first:
the time of their last use plus ``retention_seconds`` for each unit of the
highest importance among the tiers that used them. With ``retention_seconds``
0 this is plain LRU; with 60, a block of an importance-2 chat tier outlives
an importance-0 batch block used up to two minutes after it, so a shared
system prompt survives a burst of one-off documents.
"""

from __future__ import annotations

from collections.abc import Sequence

ROOT_KEY = 0  # the key "before" a prompt's first block


def block_keys(tokens: Sequence[int], block_size: int, count: int, parent: int = ROOT_KEY) -> list[int]:
    """Keys of the first ``count`` full blocks of ``tokens``, chained from ``parent``."""
    keys = []
    for index in range(count):
        parent = hash((parent, tuple(tokens[index * block_size : (index + 1) * block_size])))
        keys.append(parent)
    return keys


def reusable_blocks(known: int, block_size: int) -> int:
    """Full blocks a request may take from the cache: never its last known token's, whose logits it needs."""
    return max(known - 1, 0) // block_size


def retention_key(last_use: float, importance: float, retention_seconds: float) -> float:
    """Eviction order of a cached block no request reads: the lowest key is evicted first."""
    return last_use + retention_seconds * max(importance, 0.0)
