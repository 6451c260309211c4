"""The router's drift fixes measured against TGI's behaviour as its source shows it."""

import pytest
import requests
from router_server import real_tokenizer, tiny_server

from niyama.engine.request import TokenOutput
from niyama.qos.plan import SampledToken
from niyama.router.inference import Sequence, best_first
from niyama.router.streaming import TokenEvent


def sequence(name: str, logprobs: list[float]) -> Sequence:
    events = [
        TokenEvent(i + 1, TokenOutput(name, SampledToken(name, 7, logprob), None), "x", False, "x", None)
        for i, logprob in enumerate(logprobs)
    ]
    return Sequence(None, None, events)  # type: ignore[arg-type]  # ranking reads only the events


def test_best_of_ranks_by_mean_logprob_like_tgi_not_by_sum():
    # TGI's infer/mod.rs generate_best_of: sum of token logprobs / number of tokens, highest wins.
    short = sequence("short", [-2.0])  # sum -2.0, mean -2.0
    long = sequence("long", [-0.5, -0.5, -0.5, -0.5, -0.5])  # sum -2.5, mean -0.5
    assert [s.events[0].output.request_id for s in best_first([short, long])] == ["long", "short"]


def test_best_of_ties_keep_the_first_sequence():
    first, second = sequence("first", [-1.0, -1.0]), sequence("second", [-1.0])
    assert best_first([first, second])[0] is first


@pytest.fixture(scope="module")
def server():
    with tiny_server() as running:  # max_input_tokens 512, max_total_tokens 1000, max_best_of 2
        yield running


def post(server, route, body):
    return requests.post(server.url + route, json=body, timeout=60)


def chat_body(**extra) -> dict:
    return {"messages": [{"role": "user", "content": "Tell me a story"}], "temperature": 0, **extra}


def greedy_ids(server, **parameters) -> list[int]:
    body = {"inputs": "Tell me a story", "parameters": {"max_new_tokens": 20, "details": True, **parameters}}
    response = post(server, "/generate", body)
    assert response.status_code == 200, response.text
    return [token["id"] for token in response.json()["details"]["tokens"]]


def test_watermark_reaches_the_worker_and_shifts_greedy_choices(server):
    """TGI validation.rs passes `watermark` to ValidParameters; its server adds delta to the green list."""
    plain, marked = greedy_ids(server), greedy_ids(server, watermark=True)
    assert plain == greedy_ids(server) and marked == greedy_ids(server, watermark=True)
    assert plain != marked


def completion_text(server, **extra) -> str:
    body = {"prompt": "Tell me a story", "temperature": 0, **extra}
    response = post(server, "/v1/completions", body)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"]


def test_logit_bias_bans_and_forces_tokens_end_to_end(server):
    """OpenAI's logit_bias (TGI's lib.rs declares it UNUSED and drops it): -100 bans a token, +100 forces one."""
    body = {"inputs": "Tell me a story", "parameters": {"max_new_tokens": 1, "details": True, "top_n_tokens": 2}}
    details = post(server, "/generate", body).json()["details"]
    best, second = details["top_tokens"][0]
    assert completion_text(server, max_tokens=1) == best["text"]
    assert completion_text(server, max_tokens=1, logit_bias={str(best["id"]): -100}) == second["text"]
    forced = real_tokenizer().encode(" river", add_special_tokens=False)[0]
    assert completion_text(server, max_tokens=4, logit_bias={str(forced): 100}) == " river" * 4
    chat = post(server, "/v1/chat/completions", chat_body(max_tokens=3, logit_bias={str(forced): 100})).json()
    assert chat["choices"][0]["message"]["content"] == " river" * 3


@pytest.mark.parametrize(
    "bias, message",
    [
        ({"x1": 1}, "`logit_bias` keys must be token ids. Given: 'x1'"),
        ({"-3": 1}, "`logit_bias` keys must be token ids. Given: '-3'"),
        ({"49152": 1}, "`logit_bias` token ids must be < 49152. Given: 49152"),
        ({"7": 100.5}, "`logit_bias` values must be >= -100 and <= 100. Given: 100.5"),
    ],
)
def test_logit_bias_outside_openais_rules_is_a_422(server, bias, message):
    for route, body in (("/v1/completions", {"prompt": "a"}), ("/v1/chat/completions", chat_body())):
        response = post(server, route, {**body, "max_tokens": 2, "logit_bias": bias})
        assert response.status_code == 422 and response.json()["error"] == "Input validation error: " + message
