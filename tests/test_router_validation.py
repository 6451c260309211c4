"""Every validation rule of TGI_CONTRACT.md: exact status, error_type and message, in TGI's envelope."""

import pytest
import requests
from router_server import tiny_server

from niyama.qos.config import parse_tier_config

PREFIX = "Input validation error: "


@pytest.fixture(scope="module")
def server():
    # max_input_tokens 512, max_total_tokens 1000; TGI's other defaults.
    with tiny_server() as running:
        yield running


def post(server, route, body, **kw):
    return requests.post(server.url + route, json=body, timeout=30, **kw)


def assert_error(response, status, error_type, message=None):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "error_type"}
    assert body["error_type"] == error_type
    if message is not None:
        assert body["error"] == message


PARAMETER_RULES = [
    ({"best_of": 2}, "you must use sampling when `best_of` is > 1"),
    ({"best_of": 3, "do_sample": True}, "`best_of` must be > 0 and <= 2. Given: 3"),
    ({"best_of": 2, "do_sample": True, "seed": 1}, "`seed` must not be set when `best_of` > 1"),
    ({"temperature": 0}, "`temperature` must be strictly positive"),
    ({"temperature": -1.0}, "`temperature` must be strictly positive"),
    ({"repetition_penalty": 0}, "`repetition_penalty` must be strictly positive"),
    ({"frequency_penalty": 2.5}, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
    ({"frequency_penalty": -2.01}, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
    ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
    ({"top_p": 0}, "`top_p` must be > 0.0 and < 1.0"),
    ({"typical_p": 1.0}, "`typical_p` must be > 0.0 and < 1.0"),
    ({"typical_p": 0.0}, "`typical_p` must be > 0.0 and < 1.0"),
    ({"top_k": 0}, "`top_k` must be strictly positive"),
    ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5"),
    ({"top_n_tokens": 6}, "`top_n_tokens` must be >= 0 and <= 5. Given: 6"),
    ({"truncate": 0}, "`truncate` must be strictly positive and less than 512. Given: 0"),
    ({"truncate": 513}, "`truncate` must be strictly positive and less than 512. Given: 513"),
    ({"max_new_tokens": 999},
     "`inputs` tokens + `max_new_tokens` must be <= 1000. Given: 2 `inputs` tokens and 999 `max_new_tokens`"),
    ({"adapter_id": "my-lora"}, "`adapter_id` must be null or `tiny-random-llama`: no LoRA adapters are served"),
]  # fmt: skip


@pytest.mark.parametrize("parameters, message", PARAMETER_RULES)
def test_each_parameter_rule_is_a_422_with_tgis_message(server, parameters, message):
    response = post(server, "/generate", {"inputs": "Hello world", "parameters": parameters})
    assert_error(response, 422, "validation", PREFIX + message)


def test_input_rules(server):
    assert_error(post(server, "/generate", {"inputs": ""}), 422, "validation", PREFIX + "`inputs` cannot be empty")
    long_input = "hello" + " hello" * 599  # 600 tokens > 512
    assert_error(
        post(server, "/generate", {"inputs": long_input, "parameters": {"max_new_tokens": 1}}), 422, "validation",
        PREFIX + "`inputs` must have less than 512 tokens. Given: 600",
    )  # fmt: skip
    # truncate keeps the last N tokens, so the same input passes.
    ok = post(server, "/generate", {"inputs": long_input, "parameters": {"max_new_tokens": 1, "truncate": 10}})
    assert ok.status_code == 200
    assert ok.headers["x-prompt-tokens"] == "10"


@pytest.mark.parametrize("route", ["/generate_stream", "/"])
def test_streaming_rules(server, route):
    body = {"inputs": "Hello", "parameters": {"best_of": 2, "do_sample": True}, "stream": True}
    message = PREFIX + "`best_of` != 1 is not supported when streaming tokens"
    assert_error(post(server, route, body), 422, "validation", message)
    body["parameters"] = {"decoder_input_details": True}
    message = PREFIX + "`decoder_input_details` == true is not supported when streaming tokens"
    assert_error(post(server, route, body), 422, "validation", message)


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"not json", "the body is not valid JSON"),
        (b'{"inputs": 5}', "inputs: Input should be a valid string"),
        (b'{"parameters": {}}', "inputs: Field required"),
        (b"[1, 2]", "Input should be"),
        (b'{"inputs": "x", "parameters": {"max_new_tokens": "many"}}', "parameters.max_new_tokens"),
        (b'{"inputs": "x", "parameters": {"seed": -1}}', "parameters.seed"),
        (b'{"inputs": "x", "parameters": {"grammar": {"type": "xml"}}}', "parameters.grammar.type"),
    ],
)
def test_malformed_bodies_get_the_json_envelope(server, data, fragment):
    response = requests.post(server.url + "/generate", data=data, timeout=30)
    assert_error(response, 422, "validation")
    assert response.json()["error"].startswith(PREFIX) and fragment in response.json()["error"]


def test_explicit_nulls_and_unknown_fields_are_accepted(server):
    nulls = dict.fromkeys(
        ["best_of", "temperature", "repetition_penalty", "frequency_penalty", "top_k", "top_p", "typical_p",
         "return_full_text", "stop", "truncate", "seed", "top_n_tokens", "grammar", "adapter_id", "do_sample",
         "watermark", "details", "decoder_input_details"]
    )  # fmt: skip
    response = post(server, "/generate", {"inputs": "Hi", "parameters": {**nulls, "max_new_tokens": 2}, "extra": 1})
    assert response.status_code == 200, response.text


def test_adapter_id_naming_the_served_model_is_the_base_model(server):
    body = {"inputs": "Hi", "parameters": {"adapter_id": "tiny-random-llama", "max_new_tokens": 2}}
    assert post(server, "/generate", body).status_code == 200


def test_openai_route_rules(server):
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert_error(post(server, "/v1/chat/completions", {**chat, "top_p": 1.0}), 422, "validation",
                 PREFIX + "`top_p` must be > 0.0 and < 1.0")  # fmt: skip
    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}
    assert_error(post(server, "/v1/chat/completions", {**chat, "messages": [image]}), 422, "validation",
                 PREFIX + "image modality is not supported")  # fmt: skip
    assert_error(post(server, "/v1/chat/completions", {**chat, "messages": []}), 422, "validation")
    assert_error(post(server, "/v1/completions", {"prompt": "a", "suffix": "b"}), 422, "suffix not supported",
                 "Suffix is not supported and can be achieved by preprocessing the prompt.")  # fmt: skip
    assert_error(post(server, "/v1/completions", {"prompt": ["a"] * 5}), 422, "batch size exceeded",
                 "Number of prompts exceeds the maximum allowed batch size of 4")  # fmt: skip
    assert_error(post(server, "/v1/completions", {"prompt": []}), 422, "validation")


def test_qos_tier_and_target_rules(server):
    body = {"inputs": "Hi", "parameters": {"max_new_tokens": 1}}
    unknown = post(server, "/generate", body, headers={"x-qos-tier": "gold"})
    assert_error(unknown, 422, "validation", PREFIX + "unknown QoS tier 'gold'; known tiers: interactive, batch")
    assert_error(post(server, "/generate", {**body, "qos": {"tier": "gold"}}), 422, "validation")
    looser = post(server, "/generate", body, headers={"x-slo-ttft-ms": "60000"})
    assert_error(looser, 422, "validation")
    assert "may only tighten" in looser.json()["error"]
    foreign = post(server, "/generate", body, headers={"x-qos-tier": "batch", "x-slo-ttft-ms": "100"})
    assert_error(foreign, 422, "validation")
    bad = post(server, "/generate", body, headers={"x-slo-tbt-ms": "soon"})
    assert_error(
        bad,
        422,
        "validation",
        PREFIX + "header `x-slo-tbt-ms` must be a positive number of milliseconds. Given: 'soon'",
    )
    ok = post(server, "/generate", {**body, "qos": {"tier": "batch"}})
    assert ok.status_code == 200 and ok.headers["x-qos-tier"] == "batch"
    header_wins = post(server, "/generate", {**body, "qos": {"tier": "batch"}}, headers={"x-qos-tier": "interactive"})
    assert header_wins.headers["x-qos-tier"] == "interactive"


KEYED_TIERS = parse_tier_config(
    {
        "default": "interactive",
        "tiers": [
            {"name": "interactive", "kind": "interactive", "ttft": "2s", "tbt": "200ms", "importance": 2},
            {"name": "batch", "kind": "batch", "ttlt": "1h", "importance": 1},
        ],
        "api_keys": [{"name": "nightly", "key": "k-batch", "tiers": ["batch"], "default_tier": "batch"}],
    },
    "test",
)


def test_api_keys_decide_access_and_default_tier():
    body = {"inputs": "Hi", "parameters": {"max_new_tokens": 1}}
    with tiny_server(tiers=KEYED_TIERS, api_key="admin") as server:
        assert_error(post(server, "/generate", body), 401, "unauthorized")
        assert_error(post(server, "/generate", body, headers={"authorization": "Bearer wrong"}), 401, "unauthorized")
        nightly = {"authorization": "Bearer k-batch"}
        response = post(server, "/generate", body, headers=nightly)
        assert response.status_code == 200 and response.headers["x-qos-tier"] == "batch"
        forbidden = post(server, "/generate", body, headers={**nightly, "x-qos-tier": "interactive"})
        assert_error(
            forbidden, 403, "forbidden", "API key 'nightly' may not use QoS tier 'interactive'; allowed: batch"
        )
        admin = post(server, "/generate", body, headers={"authorization": "Bearer admin", "x-qos-tier": "batch"})
        assert admin.status_code == 200
        assert requests.get(server.url + "/health", timeout=10).status_code == 200  # info routes stay open
