"""Paged attention for a ragged batch, plugged into transformers' AttentionInterface.

The model runs once per step on all of the step's tokens concatenated as one
sequence (batch size 1). Each layer's attention call lands here with the
step's layout (`StepAttention`, passed to the model's forward as the keyword
argument ``niyama_step``): it writes the new keys and values to their cache
slots, then attends each request's queries over that request's own slots.

On a CPU nothing is copied out of the cache and no mask is built: a query
chunk attends to its own fresh keys and values with SDPA's causal kernel and
to its cached context without a mask, piece by piece (``Context``): each run
of consecutive blocks is a view of the cache, the few scattered blocks are
gathered together; the pieces' outputs are merged by their log-sum-exp. A
decode is the same without the fresh part. Other devices copy each context
out and attend with an offset causal mask, decodes as one padded batch
(``decode_rows``): a paged kernel is what they need (docs/worker.md).
Grouped-query heads go to the kernels as they are, so keys and values are
never repeated per query head. Measured on a CPU with `niyama bench prefill`
(docs/results/prefill.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

ATTENTION_NAME = "niyama_paged"


@dataclass
class Context:
    """Cached keys a query attends to: runs of consecutive slots read in place, and scattered slots gathered.

    Without a mask, attention does not depend on the order of its keys, so the
    scattered slots can be gathered in any order and each run stays a view.
    """

    runs: tuple[tuple[int, int], ...] = ()  # (first slot, length): views of the cache
    slots: torch.Tensor | None = None  # slots copied out together; with a mask, every slot in position order

    def pieces(self, cache: torch.Tensor) -> list[torch.Tensor]:
        """(1, kv_heads, n, D) keys or values of each piece."""
        rows = [cache[first : first + length] for first, length in self.runs]
        if self.slots is not None:
            rows.append(cache.index_select(0, self.slots))
        return [piece.transpose(0, 1).unsqueeze(0) for piece in rows]

    def to(self, device: torch.device) -> Context:
        return replace(self, slots=None if self.slots is None else self.slots.to(device))


@dataclass
class ChunkAttention:
    """A query chunk: rows ``[row, row + length)`` of the step, at positions ``start`` on.

    A chunk of several rows attends to its fresh keys and values (causally)
    and to its ``context``, the positions before it. A single row (a decode)
    attends to its ``context`` alone, which holds its own position too. With
    a ``mask`` (devices other than a CPU) the context is every position up to
    the chunk's end, gathered in order, and the mask is the offset causal one.
    """

    row: int
    length: int
    context: Context | None = None
    mask: torch.Tensor | None = None  # (length, end), True where allowed

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
    for chunk in step.chunks:
        span = slice(chunk.row, chunk.row + chunk.length)
        q = query[:, :, span, :]
        if chunk.mask is not None:
            (k,), (v,) = chunk.context.pieces(cache_k), chunk.context.pieces(cache_v)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=chunk.mask, scale=scaling, enable_gqa=True)
        else:
            pieces = [(key[:, :, span, :], value[:, :, span, :], True)] if chunk.length > 1 else []
            if chunk.context is not None:
                pieces += [(k, v, False) for k, v in zip(chunk.context.pieces(cache_k), chunk.context.pieces(cache_v))]
            o = _attend_pieces(q, pieces, scaling)
        out[span] = o[0].transpose(0, 1)
    return out.unsqueeze(0), None


def _attend_pieces(
    query: torch.Tensor, pieces: list[tuple[torch.Tensor, torch.Tensor, bool]], scale: float | None
) -> torch.Tensor:
    """Attention over the union of the pieces' keys: each piece on its own, merged by log-sum-exp.

    Only a CPU takes several pieces; its flash kernel returns the log-sum-exp
    that the merge needs (no public API does).
    """
    if len(pieces) == 1:
        ((k, v, causal),) = pieces
        return F.scaled_dot_product_attention(query, k, v, is_causal=causal, scale=scale, enable_gqa=True)
    out, lse = None, None
    for k, v, causal in pieces:
        o, o_lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, k, v, 0.0, causal, scale=scale)[:2]
        if out is None:
            out, lse = o, o_lse
        else:
            share = torch.sigmoid(lse - o_lse).unsqueeze(-1)  # of the keys so far: Z / (Z + Z_piece)
            out, lse = o + (out - o) * share, torch.logaddexp(lse, o_lse)
    return out


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
