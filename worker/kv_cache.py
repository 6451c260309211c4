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
    layer_devices: tuple[torch.device, ...] = ()  # per layer, for a model spread over GPUs; else all on device

    @property
    def bytes_per_token(self) -> int:
        return self.num_layers * self.bytes_per_token_layer

    @property
    def bytes_per_token_layer(self) -> int:
        return 2 * self.kv_heads * self.head_dim * torch.finfo(self.dtype).bits // 8

    def layer_device(self, layer: int) -> torch.device:
        return self.layer_devices[layer] if self.layer_devices else self.device

    @property
    def capacity_tokens(self) -> int:
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
    layer_devices: tuple[torch.device, ...] = (),
) -> KVCacheSpec:
    """Choose the number of blocks: exactly ``kv_cache_tokens`` if given, else a share of free memory.

    With ``layer_devices`` (a model spread over GPUs) each layer's cache goes
    to its layer's device, and the device with the least room per token sets
    the size.
    """
    layers, kv_heads, head_dim = kv_shape_of(config)
    spec = KVCacheSpec(layers, kv_heads, head_dim, dtype, device, block_size, 1, layer_devices)
    if kv_cache_tokens is not None:
        if kv_cache_tokens < block_size:
            raise ValueError(f"kv cache of {kv_cache_tokens} tokens is smaller than one block ({block_size})")
        num_blocks = kv_cache_tokens // block_size
    else:
        placed = layer_devices or (device,) * layers
        num_blocks = min(
            int(_budget(where, memory_fraction) // (placed.count(where) * spec.bytes_per_token_layer * block_size))
            for where in set(placed)
        )
    if num_blocks < 1:
        raise RuntimeError(f"no memory left on {device} for a KV cache ({spec.bytes_per_token} bytes per token)")
    return KVCacheSpec(layers, kv_heads, head_dim, dtype, device, block_size, num_blocks, layer_devices)


def _budget(device: torch.device, memory_fraction: float | None) -> float:
    """Bytes the cache may take on ``device``."""
    if device.type == "cuda":
        return free_memory_bytes(device) * (memory_fraction or CUDA_MEMORY_FRACTION)
    return min(free_memory_bytes(device) * (memory_fraction or CPU_MEMORY_FRACTION), CPU_MAX_CACHE_BYTES)


class PagedKVCache:
    def __init__(self, spec: KVCacheSpec) -> None:
        self.spec = spec
        shape = (spec.capacity_tokens, spec.kv_heads, spec.head_dim)
        places = [spec.layer_device(layer) for layer in range(spec.num_layers)]
        self.keys = [torch.zeros(shape, dtype=spec.dtype, device=where) for where in places]
        self.values = [torch.zeros(shape, dtype=spec.dtype, device=where) for where in places]
