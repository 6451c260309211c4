"""Fuzzing: schemathesis over our own /api-doc/openapi.json, and hypothesis over raw, malformed bodies.

Every answer must be below 500, every error must be TGI's JSON envelope, no
fuzzed request may make a step fail (which would fail the other requests of
that step too), and the server must be healthy and hold nothing afterwards.
Counts are bounded so the module runs in well under a minute; the number of
cases tried is printed at the end of every run.
"""

import json
from collections import Counter

import pytest
import requests
import schemathesis
from harden_support import settled, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from router_server import tiny_server

from niyama.router.openapi import openapi_document

CASES: Counter = Counter()
POST_ROUTES = ("/", "/generate", "/generate_stream", "/v1/chat/completions", "/v1/completions", "/tokenize",
               "/chat_tokenize", "/invocations")  # fmt: skip
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope="module")
def server():
    # Short generations (at most 48 tokens in all) keep every accepted fuzz case fast.
    with tiny_server(max_input_tokens=24, max_total_tokens=48) as running:
        yield running


def check_answer(status: int, content_type: str, content: bytes) -> None:
    """No 5xx; every error (status or in-stream event) is the envelope; no step failed."""
    assert status < 500, (status, content[:500])
    if status >= 400:
        assert content_type == "application/json", (status, content_type)
        body = json.loads(content)
        assert set(body) == {"error", "error_type"} and all(isinstance(v, str) for v in body.values()), body
        assert body["error_type"] != "generation", body
    elif content_type == "text/event-stream":
        for line in content.split(b"\n\n")[:-1]:
            assert line.startswith(b"data: "), line
            if line != b"data: [DONE]":
                event = json.loads(line[len(b"data: ") :])
                assert "error" not in event, event
    elif content_type == "application/json":
        json.loads(content)


schema = schemathesis.openapi.from_dict(openapi_document())


@schema.parametrize()
@FUZZ
def test_every_route_of_the_openapi_description(server, case):
    CASES["schemathesis"] += 1
    response = case.call(base_url=server.url, timeout=60)
    check_answer(response.status_code, response.headers.get("content-type", [""])[0], response.content)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ("inputs", "parameters", "prompt", "messages", "stream", "qos", "max_tokens", "temperature", "stop", "n")
PARAMETERS = ("max_new_tokens", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty", "seed",
              "stop", "best_of", "truncate", "top_n_tokens", "frequency_penalty", "details", "do_sample",
              "grammar")  # fmt: skip
TINY, LARGE = (5e-324, 1e-300, 1e-38, 1e-6), (1e30, 1e300, 1.7e308)
EXTREME = {  # valid values at the edges of what the rules allow: each must generate, never fail a step
    "temperature": TINY + LARGE, "repetition_penalty": TINY + LARGE, "top_p": TINY + (0.9999999999999999,),
    "typical_p": TINY + (0.9999999999999999,), "top_k": (1, 2**62), "frequency_penalty": (-2.0, 2.0),
    "seed": (0, 2**64 - 1), "top_n_tokens": (0, 5),
}  # fmt: skip
HUGE = st.sampled_from(["1e400", "-1e400", "1e-400", str(2**64), str(-(2**63) - 1), "9" * 400, "1" + "0" * 5000])


@st.composite
def hostile_bodies(draw) -> bytes:
    """Bytes a client might send: garbage, broken JSON, wrong types, huge numbers, deep nesting, bad UTF-8."""
    kinds = ["bytes", "truncated", "wrong_type", "huge", "nested", "bad_utf8", "surrogate", "extreme"]
    kind = draw(st.sampled_from(kinds))
    valid = {"inputs": "Hello", "parameters": {"max_new_tokens": 2}}
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "truncated":
        text = json.dumps(valid).encode()
        return text[: draw(st.integers(0, len(text) - 1))]
    if kind == "wrong_type":
        body = dict(valid, parameters=dict(valid["parameters"]))
        if draw(st.booleans()):
            body[draw(st.sampled_from(FIELDS))] = draw(JSON)
        else:
            body["parameters"][draw(st.sampled_from(PARAMETERS))] = draw(JSON)
        return json.dumps(body).encode()
    if kind == "huge":
        field = draw(st.sampled_from(PARAMETERS))
        return b'{"inputs": "Hi", "parameters": {"%s": %s}}' % (field.encode(), draw(HUGE).encode())
    if kind == "nested":
        depth = draw(st.sampled_from([64, 600, 2_000, 100_000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return b'{"inputs": "Hi", "parameters": ' + (opener * depth + "1" + closer * depth).encode() + b"}"
    if kind == "extreme":
        chosen = draw(st.lists(st.sampled_from(sorted(EXTREME)), min_size=1, max_size=3, unique=True))
        parameters = {name: draw(st.sampled_from(EXTREME[name])) for name in chosen}
        return json.dumps({"inputs": "Hi", "parameters": {**parameters, "max_new_tokens": 2,
                                                           "do_sample": draw(st.booleans())}}).encode()  # fmt: skip
    if kind == "bad_utf8":
        junk = draw(st.binary(min_size=1, max_size=8).filter(lambda b: not _is_utf8(b)))
        return b'{"inputs": "' + junk + b'", "parameters": {"max_new_tokens": 2}}'
    return b'{"inputs": "Hi \\ud800 \\udfff", "parameters": {"max_new_tokens": 2}}'


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@given(route=st.sampled_from(POST_ROUTES), body=hostile_bodies())
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_hostile_bodies_get_the_envelope_never_a_5xx(server, route, body):
    CASES["hypothesis"] += 1
    headers = {"content-type": "application/json"}
    response = requests.post(server.url + route, data=body, headers=headers, timeout=60)
    check_answer(response.status_code, response.headers.get("content-type", ""), response.content)


@pytest.mark.parametrize(
    "parameters",
    [{"temperature": 1e-300}, {"temperature": 5e-324, "do_sample": True}, {"repetition_penalty": 1e-300,
     "do_sample": True, "seed": 1}, {"temperature": 1e-6, "top_k": 2**62, "top_p": 5e-324, "typical_p": 1e-300}],
)  # fmt: skip
def test_extreme_but_valid_sampling_parameters_generate_instead_of_failing_the_step(server, parameters):
    greedy = {"inputs": "Hi", "parameters": {"max_new_tokens": 4}}
    expected = requests.post(server.url + "/generate", json=greedy, timeout=30).json()["generated_text"]
    body = {"inputs": "Hi", "parameters": {**parameters, "max_new_tokens": 4}}
    answer = requests.post(server.url + "/generate", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    if "repetition_penalty" not in parameters:
        assert answer.json()["generated_text"] == expected  # a temperature near 0 is greedy, as in vLLM


def test_the_server_is_healthy_and_holds_nothing_after_fuzzing(server, capsys):
    with capsys.disabled():  # the count shows in every run's output, not only with -s
        print(f"\nfuzz cases tried: {dict(CASES)} ({sum(CASES.values())} in all)")
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
    assert requests.get(server.url + "/ready", timeout=10).status_code == 200
    wait_until(lambda: settled(server))
    ok = requests.post(server.url + "/generate", json={"inputs": "Hi", "parameters": {"max_new_tokens": 3}})
    assert ok.status_code == 200 and ok.json()["generated_text"]
