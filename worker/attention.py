"""Paged attention for a ragged batch, plugged into transformers' AttentionInterface.

The model runs once per step on all of the step's tokens concatenated as one
sequence (batch size 1). Each layer's attention call lands here with the
step's layout (`StepAttention`, passed to the model's forward as the keyword
argument ``niyama_step``): it writes the new keys and values to their cache
slots, then attends each request's queries over that request's own slots.

A request whose blocks are consecutive (``Context.base``; the allocator hands
a lone or long request consecutive blocks) is read in place: its keys and
values are a view of the cache, never copied. Other contexts are gathered,
whole blocks at once. Grouped-query heads go to SDPA as they are
(``enable_gqa``), so keys and values are never repeated per query head.
Measured on a CPU (`niyama bench prefill`, docs/results/prefill.md): a view
costs SDPA nothing over a contiguous copy, while the copy it replaces cost as
much as the attention at long context.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

ATTENTION_NAME = "niyama_paged"


@dataclass
class Context:
    """Where positions ``[0, end)`` of one request live: from slot ``base`` on, or in ``blocks`` (gathered)."""

    end: int
    base: int | None = None  # first slot, when the request's blocks are consecutive
    blocks: torch.Tensor | None = None  # (ceil(end / block_size),) block ids otherwise

    def read(self, cache: torch.Tensor, block_size: int) -> torch.Tensor:
        """(1, kv_heads, end, D): a view of the cache when in place, else a copy of the request's blocks."""
        if self.base is not None:
            rows = cache[self.base : self.base + self.end]
        else:
            rows = cache.view(-1, block_size, *cache.shape[1:]).index_select(0, self.blocks).flatten(0, 1)[: self.end]
        return rows.transpose(0, 1).unsqueeze(0)

    def to(self, device: torch.device) -> Context:
        return replace(self, blocks=None if self.blocks is None else self.blocks.to(device))


@dataclass
class ChunkAttention:
    """A query chunk: rows ``[row, row + length)`` of the step.

    A chunk of several tokens that starts a request (``context`` None) attends
    only to itself, so it uses the fresh keys and values and SDPA's causal
    kernel, which skips the masked half. A later chunk reads its context
    from the cache, with a causal mask offset by its start (``mask``, built
    once per step and shared by the layers). A single query row (a decode)
    attends to its whole context and needs no mask.
    """

    row: int
    length: int
    context: Context | None = None
    mask: torch.Tensor | None = None  # (length, context.end), True where allowed; None for one row

    def to(self, device: torch.device) -> ChunkAttention:
        context = None if self.context is None else self.context.to(device)
        return ChunkAttention(self.row, self.length, context, None if self.mask is None else self.mask.to(device))


@dataclass
class StepAttention:
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    block_size: int
    write_slots: torch.Tensor  # (T,) slot of every token of the step
    chunks: list[ChunkAttention]  # every chunk read on its own: prefill chunks and decodes read in place
    decode_rows: torch.Tensor | None = None  # (B,) rows of single-token queries batched over gathered blocks
    decode_blocks: torch.Tensor | None = None  # (B, blocks) each row's blocks, padded with its first
    decode_mask: torch.Tensor | None = None  # (B, 1, 1, blocks * block_size) True on real positions
    copies: dict[torch.device, StepAttention] = field(default_factory=dict)

    def on(self, device: torch.device) -> StepAttention:
        """This layout on ``device``: a model spread over GPUs reads it on each layer's GPU, copied once per step."""
        if device == self.write_slots.device:
            return self
        if device not in self.copies:

            def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
                return None if tensor is None else tensor.to(device)

            self.copies[device] = replace(
                self, write_slots=move(self.write_slots), chunks=[c.to(device) for c in self.chunks],
                decode_rows=move(self.decode_rows), decode_blocks=move(self.decode_blocks),
                decode_mask=move(self.decode_mask), copies={},
            )  # fmt: skip
        return self.copies[device]


def paged_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    niyama_step: StepAttention | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    if niyama_step is None:
        raise RuntimeError(
            f"the {ATTENTION_NAME!r} attention runs only inside a worker step; "
            "use model.set_attn_implementation('sdpa') for other uses of the model"
        )
    cache_k, cache_v = niyama_step.keys[module.layer_idx], niyama_step.values[module.layer_idx]
    step = niyama_step.on(cache_k.device)
    _, heads, tokens, dim = query.shape
    kv_heads = key.shape[1]

    cache_k.index_copy_(0, step.write_slots, key[0].transpose(0, 1))
    cache_v.index_copy_(0, step.write_slots, value[0].transpose(0, 1))

    out = query.new_empty(tokens, heads, dim)
    if step.decode_rows is not None:
        rows = step.decode_rows
        q = query[0, :, rows, :].transpose(0, 1).unsqueeze(2)  # (B, heads, 1, D)
        k = _gather_blocks(cache_k, step.decode_blocks, step.block_size, kv_heads, dim)
        v = _gather_blocks(cache_v, step.decode_blocks, step.block_size, kv_heads, dim)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=step.decode_mask, scale=scaling, enable_gqa=True)
        out[rows] = o[:, :, 0, :]
    block = step.block_size
    for chunk in step.chunks:
        span = slice(chunk.row, chunk.row + chunk.length)
        q = query[:, :, span, :]
        if chunk.context is None:
            k, v, causal = key[:, :, span, :], value[:, :, span, :], True
        else:
            k, v, causal = chunk.context.read(cache_k, block), chunk.context.read(cache_v, block), False
        o = F.scaled_dot_product_attention(
            q, k, v, attn_mask=chunk.mask, is_causal=causal, scale=scaling, enable_gqa=True
        )
        out[span] = o[0].transpose(0, 1)
    return out.unsqueeze(0), None


def _gather_blocks(cache: torch.Tensor, blocks: torch.Tensor, block_size: int, kv_heads: int, dim: int) -> torch.Tensor:
    """(B, kv_heads, blocks * block_size, D): whole blocks copied at once, the cheapest gather on every device."""
    batch, width = blocks.shape
    paged = cache.view(-1, block_size, kv_heads, dim)
    return paged.index_select(0, blocks.view(-1)).view(batch, width * block_size, kv_heads, dim).transpose(1, 2)


def offset_causal_mask(length: int, start: int, device: torch.device) -> torch.Tensor:
    """(length, start + length): query i, at position start + i, sees keys 0..start + i."""
    rows = torch.arange(length, device=device).unsqueeze(1) + start
    cols = torch.arange(start + length, device=device).unsqueeze(0)
    return cols <= rows


AttentionInterface.register(ATTENTION_NAME, paged_attention_forward)
