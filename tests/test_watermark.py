"""TGI's greenlist watermark: TGI's green lists, detectable in greedy outputs, and no effect on requests without it."""

import math
import random

import torch
from support import Job, make_runner, reference_greedy, run_jobs, tiny_llama, tiny_loaded

from niyama.engine.protocol import SamplingParams
from niyama.worker.processors import Watermark
from niyama.worker.sampling import RequestSampler

TINY = tiny_llama()
VOCAB = 211
rng = random.Random(11)
PROMPTS = [[rng.randrange(3, VOCAB) for _ in range(rng.randint(4, 20))] for _ in range(6)]
NEW_TOKENS = 20
WATERMARKED = SamplingParams(watermark=True)


def tgi_green_list(previous: int, vocab: int) -> set[int]:
    """TGI's formula, written out again: hash_key 15485863 times the previous token seeds a CPU randperm."""
    generator = torch.Generator().manual_seed(15485863 * previous)
    return set(torch.randperm(vocab, generator=generator)[: int(vocab * 0.5)].tolist())


def z_score(prompts: list[list[int]], outputs: list[list[int]], gamma: float = 0.5) -> float:
    """The watermark paper's detector: green hits against gamma x tokens, in standard deviations."""
    hits = total = 0
    for prompt, output in zip(prompts, outputs):
        sequence = prompt + output
        for position in range(len(prompt), len(sequence)):
            hits += sequence[position] in tgi_green_list(sequence[position - 1], VOCAB)
            total += 1
    return (hits - gamma * total) / math.sqrt(total * gamma * (1 - gamma))


def test_green_list_is_tgis_for_any_previous_token():
    watermark = Watermark(torch.device("cpu"))
    for previous in (0, 1, 7, 210, 49151, 128255):
        for vocab in (VOCAB, 49152):
            green = watermark.green_list(previous, vocab).tolist()
            assert len(green) == vocab // 2
            assert set(green) == tgi_green_list(previous, vocab)


def test_watermark_adds_delta_to_exactly_the_green_tokens():
    scores = torch.randn(1, VOCAB, dtype=torch.float64)
    shifted = Watermark(torch.device("cpu"))(torch.tensor([[5, 9, 42]]), scores.clone())
    green = sorted(tgi_green_list(42, VOCAB))
    expected = scores.clone()
    expected[0, green] += 2.0
    assert torch.equal(shifted, expected)


def generate(jobs: list[Job], seed: int = 0) -> dict[str, list[int]]:
    runner, allocator = make_runner(tiny_loaded(TINY))
    return run_jobs(runner, allocator, jobs, random.Random(seed))


def test_greedy_outputs_carry_the_watermark_and_outputs_without_it_do_not():
    marked = generate([Job(f"w{i}", p, NEW_TOKENS, WATERMARKED) for i, p in enumerate(PROMPTS)])
    plain = generate([Job(f"p{i}", p, NEW_TOKENS) for i, p in enumerate(PROMPTS)])
    marked_z = z_score(PROMPTS, [marked[f"w{i}"] for i in range(len(PROMPTS))])
    plain_z = z_score(PROMPTS, [plain[f"p{i}"] for i in range(len(PROMPTS))])
    assert marked_z > 6.0, marked_z  # 120 tokens: a chance z above 6 has probability ~1e-9
    assert abs(plain_z) < 4.0, plain_z


def test_a_watermarked_request_leaves_the_others_in_its_batch_exact():
    jobs = [Job(f"w{i}", p, NEW_TOKENS, WATERMARKED) for i, p in enumerate(PROMPTS[:3])]
    jobs += [Job(f"p{i}", p, 8, arrival_step=i) for i, p in enumerate(PROMPTS[3:])]
    out = generate(jobs, seed=5)
    for i, prompt in enumerate(PROMPTS[3:]):
        assert out[f"p{i}"] == reference_greedy(TINY, prompt, 8)


def test_watermarking_leaves_the_sampling_stream_alone():
    sampled = SamplingParams(do_sample=True, seed=99)
    plain = RequestSampler(sampled, torch.device("cpu"))
    marked = RequestSampler(SamplingParams(do_sample=True, seed=99, watermark=True), torch.device("cpu"))
    marked.process(torch.zeros(VOCAB, dtype=torch.float64), [3, 4, 5])
    assert torch.equal(torch.rand(8, generator=marked.generator), torch.rand(8, generator=plain.generator))
