"""Structured output in the worker: what a grammar lets through, on a tiny random Llama with the real tokenizer.

A random model writes nonsense, which is the point: whatever it prefers, the
mask must leave only documents the schema (or regex) accepts, checked here
with an independent validator (jsonschema, Python's re).
"""

import json
import random
import re
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest
import torch
from router_server import VOCAB, real_tokenizer
from support import Job, make_runner, run_jobs, tiny_llama

from niyama.engine.grammar import GrammarSpec, grammar_error
from niyama.engine.protocol import SamplingParams, SequenceError
from niyama.qos.plan import Chunk, Plan
from niyama.worker.loading import LoadedModel

EOS = 2
MODEL = tiny_llama(torch.float32, vocab_size=VOCAB, max_position_embeddings=1024)
SHORT = {"type": "string", "maxLength": 6}
SCHEMAS = [
    {"type": "object", "properties": {"name": SHORT, "age": {"type": "integer", "minimum": 0, "maximum": 150}},
     "required": ["name", "age"], "additionalProperties": False},
    {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "minItems": 1, "maxItems": 3},
    {"type": "object", "properties": {"ok": {"type": "boolean"}, "note": {"anyOf": [SHORT, {"type": "null"}]},
     "size": {"enum": ["S", "M", "L"]}}, "required": ["ok", "size"], "additionalProperties": False},
    {"type": "object", "properties": {"point": {"type": "object", "properties": {
        "x": {"type": "integer", "minimum": -9, "maximum": 9}, "y": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["x", "y"], "additionalProperties": False}}, "required": ["point"], "additionalProperties": False},
]  # fmt: skip
REGEXES = [r"(yes|no)", r"[0-9]{4}-[0-9]{2}-[0-9]{2}", r"[a-z]{1,8}@[a-z]{1,8}\.(com|org)"]
GREEDY = SamplingParams()
SAMPLED = SamplingParams(do_sample=True, temperature=1.0, seed=11)


def runner():
    hf = real_tokenizer().hf
    loaded = LoadedModel(MODEL, hf, "tiny", Path("."), torch.device("cpu"), MODEL.dtype, frozenset({EOS}), 1024)
    return make_runner(loaded, kv_tokens=16384, block_size=16)


def generate(jobs, seed=0):
    worker, allocator = runner()
    return run_jobs(worker, allocator, jobs, random.Random(seed)), worker


def text(tokens):
    assert tokens[-1] == EOS, "a bounded grammar ends its output with EOS"
    assert EOS not in tokens[:-1]
    return real_tokenizer().hf.decode(tokens[:-1])


PROMPT = [real_tokenizer().hf.encode("Answer in JSON:")]


@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_json_outputs_validate_against_their_schema(params):
    jobs = [
        Job(f"r{i}", PROMPT[0], 200, replace(params, grammar=GrammarSpec("json", json.dumps(schema))))
        for i, schema in enumerate(SCHEMAS)
    ]
    outputs, _ = generate(jobs)
    for i, schema in enumerate(SCHEMAS):
        jsonschema.validate(json.loads(text(outputs[f"r{i}"])), schema)


@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_regex_outputs_match_in_full(params):
    jobs = [
        Job(f"r{i}", PROMPT[0], 60, replace(params, grammar=GrammarSpec("regex", rx))) for i, rx in enumerate(REGEXES)
    ]
    outputs, _ = generate(jobs)
    for i, rx in enumerate(REGEXES):
        assert re.fullmatch(rx, text(outputs[f"r{i}"]))


def test_each_distinct_grammar_compiles_once():
    spec, other = GrammarSpec("regex", "(yes|no)"), GrammarSpec("json", json.dumps(SCHEMAS[0]))
    jobs = [Job("a", PROMPT[0], 20, replace(GREEDY, grammar=spec))]
    jobs.append(Job("b", PROMPT[0], 20, replace(SAMPLED, grammar=spec)))
    jobs.append(Job("c", PROMPT[0], 40, replace(GREEDY, grammar=other), arrival_step=3))
    _, worker = generate(jobs)
    assert worker.grammar.compiles == 2


@pytest.mark.parametrize(
    "spec, reason",
    [
        (GrammarSpec("json", '{"type": "strin"}'), "invalid JSON schema: Invalid type: strin"),
        (GrammarSpec("json", "{not json"), "invalid JSON schema: not JSON (Expecting property name"),
        (GrammarSpec("json", "[1, 2]"), "invalid JSON schema: the schema must be a JSON object"),
        (GrammarSpec("json", '{"$ref": "#/nowhere"}'), "invalid JSON schema: Pointer '/nowhere' does not exist"),
        (GrammarSpec("regex", "[a-z"), "invalid regex '[a-z': unclosed character class"),
        (GrammarSpec("regex", "(?=a)b"), "invalid regex '(?=a)b': look-around"),
    ],
)
def test_an_invalid_grammar_has_a_one_line_reason_and_the_worker_refuses_it(spec, reason):
    message = grammar_error(spec)
    assert message.startswith(reason) and "\n" not in message
    worker, _ = runner()
    with pytest.raises(SequenceError, match="invalid grammar"):
        worker.add_sequence("a", PROMPT[0], replace(GREEDY, grammar=spec))


def test_valid_grammars_have_no_error():
    assert grammar_error(GrammarSpec("json", "{}")) is None
    assert grammar_error(GrammarSpec("regex", r"\d+")) is None


def test_a_constrained_neighbour_leaves_an_unconstrained_request_exact():
    plain = [Job("u", PROMPT[0], 16, GREEDY), Job("v", PROMPT[0][:3], 12, SAMPLED)]
    alone, _ = generate(plain)
    crowd = plain + [
        Job(f"c{i}", PROMPT[0], 40, replace(SAMPLED, grammar=GrammarSpec("json", json.dumps(s)), seed=i), i)
        for i, s in enumerate(SCHEMAS)
    ]
    mixed, _ = generate(crowd, seed=5)
    assert mixed["u"] == alone["u"] and mixed["v"] == alone["v"]


def test_a_recomputed_request_keeps_its_grammar_state():
    """Preemption recomputes a request from its first token on the same Sequence: the matcher carries on."""
    worker, allocator = runner()
    prompt = PROMPT[0]
    worker.add_sequence("a", prompt, replace(GREEDY, grammar=GrammarSpec("json", json.dumps(SCHEMAS[3]))))
    tokens, known = [], len(prompt)
    for step in range(60):
        start = 0 if step % 4 == 0 else known - 1  # every fourth step recomputes everything, as after preemption
        table = {"a": allocator.grow("a", known)}
        result = worker.execute(Plan((Chunk("a", start, known - start, True, start > 0),), table))
        tokens.append(result.tokens[0].token_id)
        known += 1
        if tokens[-1] == EOS:
            break
    jsonschema.validate(json.loads(text(tokens)), SCHEMAS[3])


def test_a_worker_without_a_tokenizer_refuses_a_grammar():
    worker, _ = make_runner(LoadedModel(MODEL, None, "tiny", Path("."), torch.device("cpu"), MODEL.dtype,
                                        frozenset({EOS}), 1024))  # fmt: skip
    with pytest.raises(SequenceError, match="no tokenizer"):
        worker.add_sequence("a", PROMPT[0], replace(GREEDY, grammar=GrammarSpec("regex", "a")))
