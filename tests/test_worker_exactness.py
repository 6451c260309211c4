"""Greedy outputs of the ragged, chunked, paged engine equal `model.generate`, token for token."""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import Job, make_runner, reference_greedy, run_jobs, tiny_llama, tiny_loaded

TINY = tiny_llama()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prompts=st.lists(st.lists(st.integers(3, 210), min_size=1, max_size=48), min_size=1, max_size=6),
    new_tokens=st.lists(st.integers(1, 10), min_size=6, max_size=6),
    arrivals=st.lists(st.integers(0, 5), min_size=6, max_size=6),
    block_size=st.sampled_from([1, 4, 16]),
    seed=st.integers(0, 2**16),
)
def test_tiny_model_matches_generate_for_any_chunking_and_mix(prompts, new_tokens, arrivals, block_size, seed):
    jobs = [Job(f"r{i}", prompt, new_tokens[i], arrival_step=arrivals[i]) for i, prompt in enumerate(prompts)]
    runner, allocator = make_runner(tiny_loaded(TINY), kv_tokens=2048, block_size=block_size)
    out = run_jobs(runner, allocator, jobs, random.Random(seed))
    for job in jobs:
        assert out[job.request_id] == reference_greedy(TINY, job.prompt, job.max_new_tokens), job
    assert allocator.num_free == allocator.num_blocks
    assert runner.sequences == {}


def chat_prompt(tokenizer, text: str) -> list[int]:
    return list(
        tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True)[
            "input_ids"
        ]
    )


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_default_model_matches_generate_for_random_chunking_and_mix(default_model, seed):
    rng = random.Random(seed)
    tokenizer = default_model.tokenizer
    texts = [
        "Write a haiku about autumn.",
        "def quicksort(items):",
        "What is the capital of France?",
        "Summarise the plot of Hamlet in two sentences.",
    ]
    prompts = [chat_prompt(tokenizer, text) for text in texts]
    prompts.append([rng.randrange(100, 40000) for _ in range(rng.randint(20, 90))])  # not text at all
    jobs = [
        Job(f"r{i}", prompt, rng.randint(4, 14), arrival_step=rng.randint(0, 4)) for i, prompt in enumerate(prompts)
    ]
    runner, allocator = make_runner(default_model, kv_tokens=4096, block_size=16)
    try:
        out = run_jobs(runner, allocator, jobs, rng)
    finally:
        default_model.model.set_attn_implementation("sdpa")
    for job in jobs:
        assert out[job.request_id] == reference_greedy(default_model.model, job.prompt, job.max_new_tokens)
    assert allocator.num_free == allocator.num_blocks
