"""OpenAI's logit_bias through the worker: -100 bans a token, +100 forces one, unbiased batch mates stay exact."""

import random

import pytest
import torch
from support import Job, make_runner, reference_greedy, run_jobs, tiny_llama, tiny_loaded

from niyama.engine.protocol import SamplingParams
from niyama.worker.processors import LogitBias

TINY = tiny_llama()
rng = random.Random(13)
PROMPTS = [[rng.randrange(3, 211) for _ in range(rng.randint(4, 24))] for _ in range(5)]


def generate(jobs: list[Job], seed: int = 0) -> dict[str, list[int]]:
    runner, allocator = make_runner(tiny_loaded(TINY))
    return run_jobs(runner, allocator, jobs, random.Random(seed))


def test_bias_is_added_to_exactly_the_named_tokens():
    scores = torch.randn(1, 50, dtype=torch.float64)
    biased = LogitBias(((3, -100.0), (17, 2.5)), torch.device("cpu"))(torch.tensor([[1]]), scores)
    expected = scores.clone()
    expected[0, 3] -= 100.0
    expected[0, 17] += 2.5
    assert torch.equal(biased, expected)


def test_minus_100_bans_the_token_greedy_would_pick():
    prompt = PROMPTS[0]
    greedy = reference_greedy(TINY, prompt, 6)
    banned = greedy[0]
    out = generate([Job("a", prompt, 6, SamplingParams(logit_bias=((banned, -100.0),)))])["a"]
    assert banned not in out
    assert out[0] != greedy[0]


@pytest.mark.parametrize("sampled", [False, True])
def test_plus_100_forces_a_chosen_token(sampled):
    forced = 77
    temperature = 0.9 if sampled else None
    params = SamplingParams(do_sample=sampled, temperature=temperature, seed=3, logit_bias=((forced, 100.0),))
    out = generate([Job("a", PROMPTS[1], 8, params)])["a"]
    assert forced not in reference_greedy(TINY, PROMPTS[1], 8)
    assert out == [forced] * 8


def test_biased_requests_leave_unbiased_batch_mates_exact():
    jobs = [
        Job("ban", PROMPTS[2], 10, SamplingParams(logit_bias=((reference_greedy(TINY, PROMPTS[2], 1)[0], -100.0),))),
        Job("force", PROMPTS[3], 10, SamplingParams(logit_bias=((5, 100.0), (9, -100.0)))),
    ]
    jobs += [Job(f"p{i}", p, 10, arrival_step=i) for i, p in enumerate(PROMPTS)]
    for seed in range(3):
        out = generate(jobs, seed=seed)
        for i, prompt in enumerate(PROMPTS):
            assert out[f"p{i}"] == reference_greedy(TINY, prompt, 10)
        assert out["force"] == [5] * 10
        assert out["ban"] != reference_greedy(TINY, PROMPTS[2], 10)
