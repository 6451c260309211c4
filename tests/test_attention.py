"""Paged attention read in place or gathered gives the model's own logits, for any chunking and block table."""

import random

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import make_runner, tiny_llama, tiny_loaded

from niyama.engine.protocol import SamplingParams
from niyama.qos.plan import Chunk, Plan, StepShape
from niyama.worker.attention import Context
from niyama.worker.layout import lay_out

TINY = tiny_llama()
BLOCK = 4


def test_a_context_of_consecutive_blocks_is_a_view_of_the_cache_and_others_are_gathered():
    cache = torch.arange(10 * BLOCK * 2 * 3, dtype=torch.float64).view(10 * BLOCK, 2, 3)
    in_place = Context(6, base=2 * BLOCK).read(cache, BLOCK)
    gathered = Context(6, blocks=torch.tensor([2, 7])).read(cache, BLOCK)
    assert in_place.untyped_storage().data_ptr() == cache.untyped_storage().data_ptr()  # nothing copied
    assert torch.equal(in_place[0].transpose(0, 1), cache[8:14])
    assert torch.equal(gathered[0].transpose(0, 1), torch.cat([cache[8:12], cache[28:30]]))


def test_the_layout_reads_consecutive_contexts_in_place():
    runner, _ = make_runner(tiny_loaded(TINY), kv_tokens=256, block_size=BLOCK)
    for rid in "abcd":
        runner.add_sequence(rid, list(range(3, 23)), SamplingParams())
    chunks = (
        Chunk("a", 8, 12, True),
        Chunk("b", 8, 12, True),
        Chunk("c", 19, 1, True, True),
        Chunk("d", 19, 1, True, True),
    )
    # Only the blocks the context uses count: a's sixth block may be anywhere.
    tables = {
        "a": (10, 11, 12, 13, 14, 2),
        "b": (20, 21, 23, 22, 24),
        "c": (30, 31, 32, 33, 34),
        "d": (40, 41, 42, 44, 43),
    }
    attention = lay_out(Plan(chunks, tables, shape=StepShape.of(chunks)), runner.sequences, runner.cache).attention
    a, b, c = attention.chunks
    assert (a.context.base, c.context.base) == (10 * BLOCK, 30 * BLOCK)
    assert b.context.base is None and b.context.blocks.tolist() == [20, 21, 23, 22, 24]
    assert attention.decode_rows.tolist() == [12 + 12 + 1]  # d's one row, gathered with the batch


def reference_logprobs(tokens: list[int]) -> torch.Tensor:
    """log-softmax of the stock SDPA model's logits at every position of ``tokens``."""
    TINY.set_attn_implementation("sdpa")
    with torch.inference_mode():
        return TINY(torch.tensor([tokens])).logits[0].log_softmax(-1)


def table_of(blocks: int, first: int, scattered: bool, rng: random.Random) -> tuple[int, ...]:
    """``blocks`` block ids from ``first`` on: consecutive, or the same ids shuffled (never consecutive)."""
    table = list(range(first, first + blocks))
    if scattered and blocks > 1:
        while table == sorted(table):
            rng.shuffle(table)
    return tuple(table)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prompts=st.lists(st.lists(st.integers(3, 210), min_size=2, max_size=40), min_size=1, max_size=3),
    scattered=st.lists(st.booleans(), min_size=3, max_size=3),
    decodes=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_chunks_and_decodes_match_the_model_in_place_and_gathered(prompts, scattered, decodes, seed):
    """Every prompt row's logprob (prompt details) and every sampled token equal the model's own forward pass.

    Each request's blocks are consecutive (read in place) or shuffled (gathered); the prompts go in random
    chunks, requests mixed in a step, then decode together.
    """
    rng = random.Random(seed)
    runner, _ = make_runner(tiny_loaded(TINY), kv_tokens=1024, block_size=BLOCK)
    targets = {f"r{i}": len(prompt) + decodes for i, prompt in enumerate(prompts)}
    tables, computed, details = {}, dict.fromkeys(targets, 0), {}
    for i, (rid, prompt) in enumerate(zip(targets, prompts)):
        runner.add_sequence(rid, prompt, SamplingParams(prompt_logprobs=True))
        tables[rid] = table_of(-(-targets[rid] // BLOCK), 1 + 20 * i, scattered[i], rng)
    while any(len(runner.sequences[rid].token_ids) < target for rid, target in targets.items()):
        chunks = []
        for (rid, target), prompt in zip(targets.items(), prompts):
            known = len(runner.sequences[rid].token_ids)
            if known < target:
                start = computed[rid]
                length = rng.randint(1, known - start)
                chunks.append(Chunk(rid, start, length, start + length == known, start >= len(prompt)))
        plan = Plan(tuple(chunks), {c.request_id: tables[c.request_id] for c in chunks}, shape=StepShape.of(chunks))
        for token in runner.execute(plan).tokens:
            if token.prompt_logprobs is not None:
                details[token.request_id] = token.prompt_logprobs
        for chunk in chunks:
            computed[chunk.request_id] = chunk.end
    for rid, prompt in zip(targets, prompts):
        sequence = runner.sequences[rid].token_ids
        expected = reference_logprobs(sequence[:-1])
        assert sequence[len(prompt) :] == expected[len(prompt) - 1 :].argmax(-1).tolist()
        wanted = expected[: len(prompt) - 1].gather(1, torch.tensor(prompt[1:]).unsqueeze(1))[:, 0]
        assert torch.allclose(torch.tensor(details[rid][1:], dtype=torch.float64), wanted, atol=1e-9)
