"""Paged KV tensors: the worker owns the memory, `qos` owns the accounting.

Each layer has one key and one value tensor of shape
``(num_blocks * block_size, kv_heads, head_dim)``: a "slot" is one token
position in one block, so the plan's block tables translate to slot indices
with one multiply-add and every read or write is a single index op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

DEFAULT_BLOCK_SIZE = 16
# Share of free memory the cache may take when no size is given. On a GPU the
# model is resident and activations are small next to the cache; on a CPU the
# same RAM also serves the OS and the HTTP process, so take less.
CUDA_MEMORY_FRACTION = 0.85
CPU_MEMORY_FRACTION = 0.25
CPU_MAX_CACHE_BYTES = 4 << 30


@dataclass(frozen=True)
class KVCacheSpec:
    num_layers: int
    kv_heads: int
    head_dim: int
    dtype: torch.dtype
    device: torch.device
    block_size: int
    num_blocks: int

    @property
    def bytes_per_token(self) -> int:
        return 2 * self.num_layers * self.kv_heads * self.head_dim * torch.finfo(self.dtype).bits // 8

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def num_slots(self) -> int:
        return self.num_blocks * self.block_size


def kv_shape_of(config) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) of a transformers decoder config."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return text.num_hidden_layers, kv_heads, head_dim


def free_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def size_cache(
    config,
    dtype: torch.dtype,
    device: torch.device,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    kv_cache_tokens: int | None = None,
    memory_fraction: float | None = None,
) -> KVCacheSpec:
    """Choose the number of blocks: exactly ``kv_cache_tokens`` if given, else a share of free memory."""
    layers, kv_heads, head_dim = kv_shape_of(config)
    spec = KVCacheSpec(layers, kv_heads, head_dim, dtype, device, block_size, num_blocks=1)
    if kv_cache_tokens is not None:
        if kv_cache_tokens < block_size:
            raise ValueError(f"kv cache of {kv_cache_tokens} tokens is smaller than one block ({block_size})")
        num_blocks = kv_cache_tokens // block_size
    else:
        if device.type == "cuda":
            budget = free_memory_bytes(device) * (memory_fraction or CUDA_MEMORY_FRACTION)
        else:
            budget = min(free_memory_bytes(device) * (memory_fraction or CPU_MEMORY_FRACTION), CPU_MAX_CACHE_BYTES)
        num_blocks = int(budget // (spec.bytes_per_token * block_size))
    if num_blocks < 1:
        raise RuntimeError(f"no memory left on {device} for a KV cache ({spec.bytes_per_token} bytes per token)")
    return KVCacheSpec(layers, kv_heads, head_dim, dtype, device, block_size, num_blocks)


class PagedKVCache:
    def __init__(self, spec: KVCacheSpec) -> None:
        self.spec = spec
        shape = (spec.num_slots, spec.kv_heads, spec.head_dim)
        self.keys = [torch.zeros(shape, dtype=spec.dtype, device=spec.device) for _ in range(spec.num_layers)]
        self.values = [torch.zeros(shape, dtype=spec.dtype, device=spec.device) for _ in range(spec.num_layers)]
