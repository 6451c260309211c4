"""`niyama bench grammar`: its two sides differ only by the grammar, and its figures say what they measured.

The run itself goes through a tiny random Llama with the default model's
tokenizer (the real model is the benchmark's, not the test's): whatever the
random weights prefer, the constrained side writes JSON, the unconstrained
side the same number of tokens per request, and the report's ratio is the
constrained side's tokens/s over the unconstrained side's, round by round.
"""

import json
from pathlib import Path

import pytest
import torch
from router_server import VOCAB, real_tokenizer
from support import reference_greedy, tiny_llama

from niyama.bench import grammar
from niyama.bench.cli import BENCHMARKS
from niyama.bench.grammar_schemas import SCHEMAS
from niyama.worker.loading import LoadedModel

EOS = 2


@pytest.fixture(scope="module")
def loaded():
    model = tiny_llama(torch.float64, vocab_size=VOCAB, max_position_embeddings=1024)
    hf = real_tokenizer().hf
    return LoadedModel(model, hf, "tiny", Path("."), torch.device("cpu"), model.dtype, frozenset({EOS}), 1024)


def test_one_request_per_schema_each_prompt_names_its_schema(loaded):
    jobs = grammar.jobs(loaded.tokenizer, 34)
    assert [job.name for job in jobs] == [*SCHEMAS, *list(SCHEMAS)[:2]]
    assert json.loads(jobs[3].spec.value) == SCHEMAS[jobs[3].name]
    assert "an example city weather as a JSON document" in loaded.tokenizer.decode(jobs[4].prompt)


def test_both_sides_generate_the_same_lengths_and_only_one_is_json(loaded):
    todo = grammar.jobs(loaded.tokenizer, 3)
    rounds = grammar.measure(loaded, todo, new_tokens=10, budget=256, repeats=2)
    assert len(rounds.constrained) == len(rounds.unconstrained) == 2
    assert all(len(times) == 2 and min(times) > 0 for times in rounds.compile_seconds.values())
    for constrained, unconstrained in zip(rounds.constrained, rounds.unconstrained):
        assert [len(o) for o in constrained.outputs] == [len(o) for o in unconstrained.outputs]
        assert all(1 <= len(o) <= 10 for o in constrained.outputs)
        assert constrained.mask_fill_seconds > 0 and unconstrained.mask_fill_seconds == 0
        assert constrained.mask_apply_seconds >= constrained.mask_wait_seconds >= 0
    # greedy: every round writes the same documents, which start as every one of these schemas' objects does
    assert rounds.constrained[0].outputs == rounds.constrained[1].outputs
    texts = [loaded.tokenizer.decode(o) for o in rounds.constrained[0].outputs]
    assert all(text.startswith('{"') for text in texts), texts
    assert not any(loaded.tokenizer.decode(o).startswith('{"') for o in rounds.unconstrained[0].outputs)
    # and the unconstrained side is the model's own greedy continuation, through the engine's paged attention
    for job, output in zip(todo, rounds.unconstrained[0].outputs):
        assert output == reference_greedy(loaded.model, list(job.prompt), len(output))


def test_report_ratio_is_per_round_tokens_per_second_and_counts_complete_documents():
    def side(seconds, fill=0.0):
        return grammar.Side(seconds, [[5, 6, EOS], [7]], fill)

    rounds = grammar.Rounds({"person": [0.002, 0.004, 0.003]}, [side(1.0, 0.001), side(2.0, 0.002), side(1.0, 0.003)],
                            [side(1.0), side(1.0), side(2.0)])  # fmt: skip
    todo = [grammar.Job("person", (1,), None), grammar.Job("person", (1,), None)]
    figures = grammar.report(rounds, todo, frozenset({EOS}), 64)
    assert figures["ratio"] == pytest.approx({"median": 1.0, "min": 0.5, "max": 2.0})
    assert figures["tokens_per_s"]["constrained"] == pytest.approx({"median": 4.0, "min": 2.0, "max": 4.0})
    assert figures["compile_ms"]["person"] == pytest.approx({"median": 3.0, "min": 2.0, "max": 4.0})
    assert figures["mask_fill_ms_per_step"]["median"] == pytest.approx(2.0)
    assert (figures["generated_tokens"], figures["complete_documents"]) == (4, 1)
    text = grammar.text({"model": "m", "device": "cpu", **figures})
    assert "| **ratio constrained / unconstrained** | **1.000 (0.500-2.000)** |" in text
    assert "| person | 3.0 (2.0-4.0) |" in text


def test_registered_as_a_benchmark():
    assert BENCHMARKS["grammar"][0] == "niyama.bench.grammar"
