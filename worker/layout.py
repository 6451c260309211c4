"""Lay a plan out as one ragged sequence: token ids, positions, cache slots, logit rows.

Everything a step needs on the device is built here once, on the host, and
shared by every layer's attention call: on a CPU, which runs of each
request's blocks are read in place and which blocks are gathered.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from niyama.qos.plan import Chunk, Plan

from .attention import ChunkAttention, Context, StepAttention, offset_causal_mask
from .kv_cache import PagedKVCache
from .sequence import Sequence

# A shorter run of consecutive blocks is gathered with the scattered ones: a view of it would cost one more
# attention call per layer than the copy saves.
IN_PLACE_MIN_BLOCKS = 4


@dataclass
class PromptRows:
    """Logit rows ``[first, first + count)`` predict prompt tokens ``position + 1 ..``."""

    request_id: str
    first: int
    position: int
    count: int


@dataclass
class StepLayout:
    input_ids: torch.Tensor  # (1, T)
    positions: torch.Tensor  # (1, T)
    attention: StepAttention
    logit_rows: torch.Tensor  # rows of the step whose logits are computed
    sample_rows: list[int]  # index into logit_rows, one per sampling chunk
    sampling_chunks: list[Chunk]
    prompt_rows: list[PromptRows]


def lay_out(plan: Plan, sequences: dict[str, Sequence], cache: PagedKVCache) -> StepLayout:
    block_size, device = cache.spec.block_size, cache.spec.device
    ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    keep: list[int] = []  # step rows whose logits are computed
    sample_rows: list[int] = []
    prompt_rows: list[PromptRows] = []
    single_queries: list[tuple[int, tuple[int, ...], int]] = []  # row, block table, context length
    chunks: list[ChunkAttention] = []
    # A CPU reads contexts in place, one request at a time (attention.py); other devices keep the batch.
    in_place = device.type == "cpu"
    for chunk in plan.chunks:
        seq = sequences[chunk.request_id]
        table = plan.block_tables[chunk.request_id]
        row = len(ids)
        span = range(chunk.start, chunk.end)
        ids.extend(seq.token_ids[chunk.start : chunk.end])
        positions.extend(span)
        slots.extend(table[p // block_size] * block_size + p % block_size for p in span)
        needed = seq.next_prompt_logprob
        if needed is not None and chunk.start < needed <= chunk.end:
            # The row at position p predicts token p + 1: prompt tokens come
            # from positions up to prompt_len - 2.
            first = needed - 1
            count = min(chunk.end, seq.prompt_len - 1) - first
            prompt_rows.append(PromptRows(chunk.request_id, len(keep), first, count))
            keep.extend(range(row + first - chunk.start, row + first - chunk.start + count))
        if chunk.sample:
            sample_rows.append(len(keep))
            keep.append(row + chunk.length - 1)
        if in_place and chunk.length == 1:
            chunks.append(ChunkAttention(row, 1, _context(table, chunk.end, block_size)))
        elif chunk.length == 1:
            # One query row: the batched paged path, whether it is a decode (``Chunk.is_decode``, the
            # scheduler's and the latency model's notion) or a one-token prefill chunk.
            single_queries.append((row, table, chunk.end))
        elif chunk.start == 0:
            chunks.append(ChunkAttention(row, chunk.length))
        elif in_place:
            chunks.append(ChunkAttention(row, chunk.length, _context(table, chunk.start, block_size)))
        else:
            context = Context(slots=_slots(table, chunk.end, block_size).to(device))
            chunks.append(
                ChunkAttention(row, chunk.length, context, offset_causal_mask(chunk.length, chunk.start, device))
            )
    attention = StepAttention(
        keys=cache.keys,
        values=cache.values,
        block_size=block_size,
        write_slots=torch.tensor(slots, dtype=torch.long, device=device),
        chunks=chunks,
    )
    if single_queries:
        rows, tables, ends = zip(*single_queries)
        blocks, mask = _decode_context(tables, ends, block_size)
        attention.decode_rows = torch.tensor(rows, dtype=torch.long, device=device)
        attention.decode_blocks, attention.decode_mask = blocks.to(device), mask.to(device)
    return StepLayout(
        input_ids=torch.tensor([ids], dtype=torch.long, device=device),
        positions=torch.tensor([positions], dtype=torch.long, device=device),
        attention=attention,
        logit_rows=torch.tensor(keep, dtype=torch.long, device=device),
        sample_rows=sample_rows,
        sampling_chunks=[chunk for chunk in plan.chunks if chunk.sample],
        prompt_rows=prompt_rows,
    )


def _slots(table: tuple[int, ...], end: int, block_size: int) -> torch.Tensor:
    blocks = torch.tensor(table[: -(-end // block_size)], dtype=torch.long)
    return (blocks.unsqueeze(1) * block_size + torch.arange(block_size)).flatten()[:end]


def _context(table: tuple[int, ...], end: int, block_size: int) -> Context:
    """Positions ``[0, end)`` of a request: its runs of at least ``IN_PLACE_MIN_BLOCKS`` consecutive blocks
    in place, the slots of its other blocks to gather."""
    used = table[: -(-end // block_size)]
    runs: list[tuple[int, int]] = []
    scattered: list[int] = []
    first = 0
    for index in range(1, len(used) + 1):
        if index < len(used) and used[index] == used[index - 1] + 1:
            continue
        slot, length = used[first] * block_size, min(index * block_size, end) - first * block_size
        if index - first >= IN_PLACE_MIN_BLOCKS:
            runs.append((slot, length))
        else:
            scattered.extend(range(slot, slot + length))
        first = index
    return Context(tuple(runs), torch.tensor(scattered, dtype=torch.long) if scattered else None)


def _decode_context(
    tables: tuple[tuple[int, ...], ...], ends: tuple[int, ...], block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, W) blocks of every decode's context, padded with its first block, and the (B, 1, 1, W * block_size) mask."""
    width = -(-max(ends) // block_size)
    padded = []
    for table, end in zip(tables, ends):
        used = list(table[: -(-end // block_size)])
        padded.append(used + [used[0]] * (width - len(used)))
    positions = torch.arange(width * block_size)
    valid = positions.unsqueeze(0) < torch.tensor(ends).unsqueeze(1)
    return torch.tensor(padded, dtype=torch.long), valid[:, None, None, :]
