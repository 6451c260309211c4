"""Sampling with TGI's parameters: reproducible per seed, independent of the batch, exact logprobs."""

import random
from dataclasses import replace

import pytest
import torch
from support import Job, make_runner, reference_greedy, run_jobs, tiny_llama, tiny_loaded

from niyama.engine.protocol import SamplingParams
from niyama.qos.plan import Chunk, Plan
from niyama.worker.sampling import penalties

TINY = tiny_llama()
rng = random.Random(7)
PROMPTS = [[rng.randrange(3, 211) for _ in range(rng.randint(5, 30))] for _ in range(5)]
SAMPLED = SamplingParams(do_sample=True, temperature=0.8, top_k=60, top_p=0.9, typical_p=0.95, seed=1234)


def generate(jobs, seed=0, block_size=4):
    runner, allocator = make_runner(tiny_loaded(TINY), block_size=block_size)
    return run_jobs(runner, allocator, jobs, random.Random(seed))


def test_same_seed_same_tokens_whatever_shares_the_step():
    alone = generate([Job("a", PROMPTS[0], 12, SAMPLED)])["a"]
    crowd = [Job("a", PROMPTS[0], 12, SAMPLED, arrival_step=2)]
    crowd += [Job(f"o{i}", p, 9, SamplingParams(do_sample=True, seed=i)) for i, p in enumerate(PROMPTS[1:])]
    crowd += [Job("g", PROMPTS[1], 5)]
    for seed in range(3):
        assert generate(crowd, seed=seed, block_size=16)["a"] == alone


def test_a_different_seed_gives_different_tokens():
    first = generate([Job("a", PROMPTS[0], 12, SAMPLED)])["a"]
    assert generate([Job("a", PROMPTS[0], 12, replace(SAMPLED, seed=4321))])["a"] != first


def test_top_k_one_is_greedy():
    params = SamplingParams(do_sample=True, top_k=1, seed=5)
    assert generate([Job("a", PROMPTS[2], 10, params)])["a"] == reference_greedy(TINY, PROMPTS[2], 10)


@pytest.mark.parametrize("penalty", [1.3, 0.7])
def test_repetition_penalty_matches_generate(penalty):
    params = SamplingParams(repetition_penalty=penalty)
    ours = generate([Job("a", PROMPTS[3], 10, params), Job("b", PROMPTS[4], 6)], seed=3)["a"]
    assert ours == reference_greedy(TINY, PROMPTS[3], 10, repetition_penalty=penalty)


def test_frequency_and_presence_penalties_shift_exactly_the_seen_tokens():
    params = SamplingParams(frequency_penalty=1.5, presence_penalty=0.5)
    processors = penalties(params)
    history = torch.tensor([[4, 4, 7, 9]])
    scores = torch.zeros(1, 12, dtype=torch.float64)
    for processor in processors:
        scores = processor(history, scores)
    expected = torch.zeros(12, dtype=torch.float64)
    expected[4] = -1.5 * 2 / 4 - 0.5
    expected[7] = expected[9] = -1.5 / 4 - 0.5
    assert torch.allclose(scores[0], expected)


def test_logprobs_and_top_tokens_match_generate_scores():
    runner, allocator = make_runner(tiny_loaded(TINY))
    prompt = PROMPTS[1]
    runner.add_sequence("a", prompt, SamplingParams(top_n_tokens=3))
    tokens = []
    computed, known = 0, len(prompt)
    for _ in range(4):
        chunk = Chunk("a", computed, known - computed, True, computed > 0)
        result = runner.execute(Plan((chunk,), {"a": allocator.grow("a", known)}))
        tokens.append(result.tokens[0])
        computed, known = known, known + 1
    TINY.set_attn_implementation("sdpa")
    with torch.inference_mode():
        out = TINY.generate(
            torch.tensor([prompt]),
            max_new_tokens=4,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=0,
        )
    for token, logits in zip(tokens, out.logits):
        logprobs = logits[0].log_softmax(-1)  # generate hands logits out in float32
        assert token.logprob == pytest.approx(logprobs[token.token_id].item(), abs=1e-6)
        top = logprobs.topk(3)
        assert [t.token_id for t in token.top_tokens] == top.indices.tolist()
        assert token.top_tokens[0].token_id == token.token_id
        assert [t.logprob for t in token.top_tokens] == pytest.approx(top.values.tolist(), abs=1e-6)


def test_prompt_logprobs_match_a_full_forward_pass_for_any_chunking():
    prompt = PROMPTS[0] + PROMPTS[2]
    TINY.set_attn_implementation("sdpa")
    with torch.inference_mode():
        logits = TINY(torch.tensor([prompt])).logits[0]
    expected = logits[:-1].log_softmax(-1).gather(1, torch.tensor(prompt[1:]).unsqueeze(1))[:, 0].tolist()
    for seed in range(4):
        runner, allocator = make_runner(tiny_loaded(TINY))
        runner.add_sequence("a", prompt, SamplingParams(prompt_logprobs=True))
        chunk_rng = random.Random(seed)
        computed, delivered = 0, None
        while delivered is None:
            length = chunk_rng.randint(1, len(prompt) - computed)
            chunk = Chunk("a", computed, length, computed + length == len(prompt))
            result = runner.execute(Plan((chunk,), {"a": allocator.grow("a", chunk.end)}))
            computed = chunk.end
            if result.tokens:
                delivered = result.tokens[0].prompt_logprobs
        assert delivered[0] is None
        assert list(delivered[1:]) == pytest.approx(expected, abs=1e-9)
