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


def test_a_context_reads_its_runs_in_place_and_gathers_the_rest():
    cache = torch.arange(10 * BLOCK * 2 * 3, dtype=torch.float64).view(10 * BLOCK, 2, 3)
    run, gathered = Context(runs=((8, 6),), slots=torch.tensor([28, 29, 3])).pieces(cache)
    assert run.untyped_storage().data_ptr() == cache.untyped_storage().data_ptr()  # a view: nothing copied
    assert torch.equal(run[0].transpose(0, 1), cache[8:14])
    assert torch.equal(gathered[0].transpose(0, 1), cache[[28, 29, 3]])


def test_the_layout_reads_runs_of_blocks_in_place_on_a_cpu():
    runner, _ = make_runner(tiny_loaded(TINY), kv_tokens=256, block_size=BLOCK)
    for rid in "abc":
        runner.add_sequence(rid, list(range(3, 43)), SamplingParams())
    chunks = (Chunk("a", 24, 16, True), Chunk("b", 24, 16, True), Chunk("c", 39, 1, True, True))
    tables = {
        "a": (10, 11, 12, 13, 14, 15, 2, 7, 1, 9),  # the context, positions 0..23, is blocks 10..15
        "b": (20, 21, 22, 23, 30, 5, 31, 32, 33, 34),  # a run of 4 blocks, then 30 and 5 scattered
        "c": tuple(range(40, 50)),
    }
    a, b, c = lay_out(Plan(chunks, tables, shape=StepShape.of(chunks)), runner.sequences, runner.cache).attention.chunks
    assert (a.context.runs, a.context.slots, a.mask) == (((10 * BLOCK, 24),), None, None)
    assert b.context.runs == ((20 * BLOCK, 16),)
    assert b.context.slots.tolist() == [*range(30 * BLOCK, 31 * BLOCK), *range(5 * BLOCK, 6 * BLOCK)]
    assert (c.row, c.context.runs, c.context.slots) == (32, ((40 * BLOCK, 40),), None)  # the decode's own slot too


def reference_logprobs(tokens: list[int]) -> torch.Tensor:
    """log-softmax of the stock SDPA model's logits at every position of ``tokens``."""
    TINY.set_attn_implementation("sdpa")
    with torch.inference_mode():
        return TINY(torch.tensor([tokens])).logits[0].log_softmax(-1)


def table_of(blocks: int, first: int, kind: str, rng: random.Random) -> tuple[int, ...]:
    """``blocks`` block ids from ``first`` on: consecutive, two runs swapped, or shuffled."""
    table = list(range(first, first + blocks))
    if kind == "runs":
        half = blocks // 2
        table = table[half:] + table[:half]
    elif kind == "shuffled":
        rng.shuffle(table)
    return tuple(table)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prompts=st.lists(st.lists(st.integers(3, 210), min_size=2, max_size=40), min_size=1, max_size=3),
    tables=st.lists(st.sampled_from(["consecutive", "runs", "shuffled"]), min_size=3, max_size=3),
    decodes=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_chunks_and_decodes_match_the_model_in_place_and_gathered(prompts, tables, decodes, seed):
    """Every prompt row's logprob (prompt details) and every sampled token equal the model's own forward pass.

    Each request's blocks are consecutive (read in place), two runs or shuffled (gathered); the prompts go in random
    chunks, requests mixed in a step, then decode together.
    """
    rng = random.Random(seed)
    runner, _ = make_runner(tiny_loaded(TINY), kv_tokens=1024, block_size=BLOCK)
    targets = {f"r{i}": len(prompt) + decodes for i, prompt in enumerate(prompts)}
    kinds, tables, computed, details = tables, {}, dict.fromkeys(targets, 0), {}
    for i, (rid, prompt) in enumerate(zip(targets, prompts)):
        runner.add_sequence(rid, prompt, SamplingParams(prompt_logprobs=True))
        tables[rid] = table_of(-(-targets[rid] // BLOCK), 1 + 20 * i, kinds[i], rng)
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
