"""TGI 3.x's default length on every route: no max means until EOS, up to `--max-total-tokens` minus the input.

The tiny model has no EOS token in its set, so a request without a max runs
to exactly the limit, with finish_reason "length" (TGI's router/src/validation.rs
`validate_input`: `max_total_tokens.saturating_sub(input_length)`).
"""

import pytest
import requests
from router_server import tiny_server

MAX_TOTAL = 300


@pytest.fixture(scope="module")
def server():
    with tiny_server(max_input_tokens=100, max_total_tokens=MAX_TOTAL) as running:
        yield running


def post(server, route, body):
    response = requests.post(server.url + route, json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response


@pytest.mark.parametrize("parameters", [{}, {"max_new_tokens": None}, None])
def test_generate_without_a_max_runs_to_max_total_tokens(server, parameters):
    """TGI validation.rs: `max_new_tokens` None -> max_total_tokens - input_length (absent, null, no parameters)."""
    body = {"inputs": "Once upon a time", "parameters": {**(parameters or {}), "details": True}}
    if parameters is None:
        body["parameters"] = None
    response = post(server, "/generate", body)
    prompt = int(response.headers["x-prompt-tokens"])
    generated = int(response.headers["x-generated-tokens"])
    assert generated == MAX_TOTAL - prompt > 100
    if parameters is not None:
        assert response.json()["details"]["finish_reason"] == "length"
        assert response.json()["details"]["generated_tokens"] == generated


def test_an_explicit_max_still_holds(server):
    response = post(server, "/generate", {"inputs": "Once upon a time", "parameters": {"max_new_tokens": 7}})
    assert response.headers["x-generated-tokens"] == "7"
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 6, "max_tokens": 9}
    assert post(server, "/v1/chat/completions", chat).json()["usage"]["completion_tokens"] == 6
    completion = post(server, "/v1/completions", {"prompt": "a", "max_tokens": 4}).json()
    assert completion["usage"]["completion_tokens"] == 4


def test_chat_and_completion_without_a_max_run_to_max_total_tokens(server):
    """TGI lib.rs ChatRequest / server.rs completions: `max_new_tokens: max_tokens`, None when not given."""
    chat = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Write 500 words"}]}).json()
    usage = chat["usage"]
    assert usage["completion_tokens"] == MAX_TOTAL - usage["prompt_tokens"] > 100
    assert chat["choices"][0]["finish_reason"] == "length"
    completion = post(server, "/v1/completions", {"prompt": "Once upon a time"}).json()
    usage = completion["usage"]
    assert usage["completion_tokens"] == MAX_TOTAL - usage["prompt_tokens"] > 100
    assert completion["choices"][0]["finish_reason"] == "length"


def prompt_tokens(server, text: str) -> int:
    return len(requests.post(server.url + "/tokenize", json={"inputs": text}, timeout=30).json())


def test_a_stream_without_a_max_runs_to_max_total_tokens(server):
    body = {"inputs": "Once upon a time", "parameters": {"details": True}}
    last = requests.post(server.url + "/generate_stream", json=body, timeout=120).text.strip().split("\n\n")[-1]
    assert '"finish_reason":"length"' in last
    assert f'"generated_tokens":{MAX_TOTAL - prompt_tokens(server, "Once upon a time")}' in last


def test_vertex_without_a_max_runs_to_max_total_tokens(server):
    """TGI vertex.rs: a generate instance samples with its own `max_new_tokens`, None when not given."""
    vertex = post(server, "/vertex", {"instances": [{"inputs": "Once upon a time", "parameters": {"seed": 5}}]})
    generate = post(server, "/generate", {"inputs": "Once upon a time", "parameters": {"do_sample": True, "seed": 5}})
    assert vertex.json()["predictions"] == [generate.json()["generated_text"]]
    assert int(generate.headers["x-generated-tokens"]) == MAX_TOTAL - prompt_tokens(server, "Once upon a time")
