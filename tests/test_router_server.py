"""The server around a real engine (tiny model): wire format, disconnects, overload, failed steps, stop sequences."""

import json
import time

import pytest
import requests
from harden_support import HeldStream, PacedWorker, metric, wait_until
from router_server import tiny_parts, tiny_server

from niyama.engine.faults import WrappedWorker

SSE_HEADERS = {"content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no"}


@pytest.fixture(scope="module")
def server():
    with tiny_server(parts=tiny_parts(worker=PacedWorker)) as running:
        yield running


def events(response) -> list[bytes]:
    raw = response.content
    assert raw.endswith(b"\n\n")
    chunks = raw[:-2].split(b"\n\n")
    assert all(chunk.startswith(b"data: ") and b"\n" not in chunk for chunk in chunks)
    return [chunk[len(b"data: ") :] for chunk in chunks]


def blocks_all_free(server) -> bool:
    stats = server.state.engine.stats()
    return stats.free_blocks == stats.total_blocks and server.state.engine.in_flight == 0


def test_tgi_stream_is_exactly_tgis_sse_and_never_sends_done(server):
    body = {"inputs": "Hello", "parameters": {"max_new_tokens": 4, "details": True, "top_n_tokens": 2}}
    response = requests.post(server.url + "/generate_stream", json=body, timeout=30)
    assert response.status_code == 200
    assert {k: response.headers[k] for k in SSE_HEADERS} == SSE_HEADERS
    assert response.headers["x-qos-tier"] == "interactive"
    payloads = events(response)
    assert b"[DONE]" not in response.content
    parsed = [json.loads(p) for p in payloads]
    assert all(json.dumps(p, separators=(",", ":"), ensure_ascii=False).encode() == raw
               for p, raw in zip(parsed, payloads))  # compact JSON  # fmt: skip
    assert [p["index"] for p in parsed] == [1, 2, 3, 4]
    assert all(set(p["token"]) == {"id", "text", "logprob", "special"} and len(p["top_tokens"]) == 2 for p in parsed)
    assert all(p["generated_text"] is None and p["details"] is None for p in parsed[:-1])
    assert parsed[-1]["generated_text"] == "".join(p["token"]["text"] for p in parsed)
    assert parsed[-1]["details"] == {"finish_reason": "length", "generated_tokens": 4, "seed": None,
                                     "input_length": 1}  # fmt: skip


def test_generate_matches_its_stream_and_reports_tgi_headers(server):
    body = {"inputs": "Hello", "parameters": {"max_new_tokens": 5, "details": True, "decoder_input_details": True}}
    response = requests.post(server.url + "/generate", json=body, timeout=30)
    assert response.status_code == 200
    for header in (
        "x-compute-type",
        "x-compute-time",
        "x-compute-characters",
        "x-total-time",
        "x-validation-time",
        "x-queue-time",
        "x-inference-time",
        "x-time-per-token",
        "x-prompt-tokens",
        "x-generated-tokens",
    ):
        assert header in response.headers  # fmt: skip
    assert response.headers["x-generated-tokens"] == "5" and response.headers["x-qos-tier"] == "interactive"
    result = response.json()
    details = result["details"]
    assert details["prefill"][0] == {"id": 19556, "text": "Hello", "logprob": None}
    assert "top_tokens" not in details and "best_of_sequences" not in details
    stream = requests.post(
        server.url + "/generate_stream", json={"inputs": "Hello", "parameters": {"max_new_tokens": 5}}
    )
    last = json.loads(events(stream)[-1])
    assert last["generated_text"] == result["generated_text"] and last["details"] is None
    compat = requests.post(server.url + "/", json={"inputs": "Hello", "parameters": {"max_new_tokens": 5}}).json()
    assert compat == [{"generated_text": "Hello" + result["generated_text"]}]  # a list; full text by default


def test_best_of_returns_the_most_likely_sequence_and_the_others(server):
    body = {"inputs": "Hello", "parameters": {"max_new_tokens": 4, "best_of": 2, "do_sample": True, "details": True}}
    details = requests.post(server.url + "/generate", json=body, timeout=30).json()["details"]
    (other,) = details["best_of_sequences"]
    assert details["seed"] is not None and other["seed"] is not None and details["seed"] != other["seed"]
    def mean(tokens):  # TGI ranks best_of by the mean logprob of the generated tokens
        return sum(t["logprob"] for t in tokens) / len(tokens)

    assert mean(details["tokens"]) >= mean(other["tokens"])


def test_seeded_sampling_is_reproducible(server):
    body = {"inputs": "Hello", "parameters": {"max_new_tokens": 6, "do_sample": True, "seed": 42, "details": True}}
    first, second = (requests.post(server.url + "/generate", json=body, timeout=30).json() for _ in range(2))
    assert first == second and first["details"]["seed"] == 42


def test_openai_streams_end_with_done_except_for_tgis_own_client(server):
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    response = requests.post(server.url + "/v1/chat/completions", json={**chat, "model": "any"}, timeout=30)
    payloads = events(response)
    assert payloads[-1] == b"[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["choices"][0]["delta"]["tool_calls"] is None for c in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    tgi = requests.post(server.url + "/v1/chat/completions", json={**chat, "model": "tgi"}, timeout=30)
    assert b"[DONE]" not in tgi.content and len(events(tgi)) == 4
    completion = requests.post(server.url + "/v1/completions", json={"prompt": ["a", "b"], "max_tokens": 2,
                                                                      "stream": True}, timeout=30)  # fmt: skip
    payloads = events(completion)
    assert payloads[-1] == b"[DONE]" and len(payloads) == 5


def test_stop_sequence_spanning_tokens_ends_the_request_and_frees_its_blocks(server):
    plain = {"inputs": "Hello", "parameters": {"max_new_tokens": 12, "details": True}}
    tokens = requests.post(server.url + "/generate", json=plain, timeout=30).json()["details"]["tokens"]
    text = "".join(t["text"] for t in tokens)
    boundary = len(tokens[3]["text"]) + len("".join(t["text"] for t in tokens[:3]))
    stop = text[boundary - 2 : boundary + 2]  # the end of token 4 and the start of token 5
    stopped = {"inputs": "Hello", "parameters": {"max_new_tokens": 12, "details": True, "stop": [stop]}}
    result = requests.post(server.url + "/generate", json=stopped, timeout=30).json()
    assert result["details"]["finish_reason"] == "stop_sequence"
    assert result["generated_text"] == text[: text.index(stop) + len(stop)]  # TGI keeps the stop sequence
    assert result["details"]["generated_tokens"] < 12
    chat = {"model": "m", "prompt": "Hello", "max_tokens": 12, "temperature": 0, "stop": stop}
    completion = requests.post(server.url + "/v1/completions", json=chat, timeout=30).json()
    assert completion["choices"][0]["text"] == text[: text.index(stop)]  # OpenAI leaves it out
    assert completion["choices"][0]["finish_reason"] == "stop_sequence"
    wait_until(lambda: blocks_all_free(server))


def test_a_client_that_disconnects_mid_stream_is_aborted_and_its_blocks_freed(server):
    body = {"inputs": "Hello", "parameters": {"max_new_tokens": 400}}
    with HeldStream(server.url, body):
        time.sleep(0.2)
        stats = server.state.engine.stats()
        assert stats.free_blocks < stats.total_blocks and server.state.engine.in_flight == 1
    wait_until(lambda: blocks_all_free(server), timeout=2.0)  # finishing the 400 tokens would take 8 s
    assert metric(server, "niyama_kv_blocks_free") == metric(server, "niyama_kv_blocks_total")
    assert metric(server, 'niyama_tier_requests_total{outcome="cancelled",tier="interactive"}') >= 1  # its client left


def test_over_the_concurrency_limit_is_429_overloaded_with_retry_after():
    with tiny_server(parts=tiny_parts(worker=PacedWorker), max_concurrent_requests=1) as server:
        body = {"inputs": "Hello", "parameters": {"max_new_tokens": 400}}
        with HeldStream(server.url, body):
            for route in ("/generate", "/generate_stream", "/v1/completions"):
                refused = requests.post(server.url + route, json={"inputs": "x", "prompt": "x"}, timeout=30)
                assert refused.status_code == 429, route
                assert refused.json() == {"error": "Model is overloaded", "error_type": "overloaded"}
                assert refused.headers["retry-after"] == "1"
        wait_until(lambda: server.state.inference.limit.in_use == 0)
        ok = requests.post(server.url + "/generate", json={"inputs": "x", "parameters": {"max_new_tokens": 2}})
        assert ok.status_code == 200
        assert metric(server, 'tgi_request_failure{err="overloaded"}') == 3


class FailingWorker(WrappedWorker):
    """The real runner, except that every step raises while `failing` is set."""

    failing = False

    def before_step(self, plan):
        if FailingWorker.failing:
            raise RuntimeError("injected fault")


def test_a_failed_step_fails_only_its_requests_and_the_server_stays_up():
    with tiny_server(parts=tiny_parts(worker=FailingWorker)) as server:
        FailingWorker.failing = True
        try:
            failed = requests.post(server.url + "/generate", json={"inputs": "Hi"}, timeout=30)
            streamed = requests.post(server.url + "/generate_stream", json={"inputs": "Hi"}, timeout=30)
        finally:
            FailingWorker.failing = False
        assert failed.status_code == 424 and failed.json()["error_type"] == "generation"
        assert "injected fault" in failed.json()["error"]
        assert streamed.status_code == 200
        assert json.loads(events(streamed)[-1]) == {
            "error": "Request failed during generation: RuntimeError: injected fault",
            "error_type": "generation",
        }
        assert requests.get(server.url + "/health", timeout=10).status_code == 200
        ok = requests.post(server.url + "/generate", json={"inputs": "Hi", "parameters": {"max_new_tokens": 3}})
        assert ok.status_code == 200
        wait_until(lambda: blocks_all_free(server))
        assert metric(server, 'tgi_batch_inference_failure{method="prefill"}') >= 1


def test_per_tier_latency_histograms_count_each_token_of_the_tier(server):
    def count(name: str, tier: str) -> float:
        try:
            return metric(server, f'{name}_count{{tier="{tier}"}}')
        except AssertionError:
            return 0.0

    before = {
        name: count(name, "batch") for name in ("niyama_ttft_seconds", "niyama_tbt_seconds", "niyama_ttlt_seconds")
    }
    interactive_before = count("niyama_ttft_seconds", "interactive")
    body = {"inputs": "Hello", "parameters": {"max_new_tokens": 5, "details": True}}
    answer = requests.post(server.url + "/generate", json=body, headers={"x-qos-tier": "batch"}, timeout=30).json()
    generated = answer["details"]["generated_tokens"]
    assert count("niyama_ttft_seconds", "batch") == before["niyama_ttft_seconds"] + 1
    assert count("niyama_ttlt_seconds", "batch") == before["niyama_ttlt_seconds"] + 1
    assert count("niyama_tbt_seconds", "batch") == before["niyama_tbt_seconds"] + generated - 1
    assert count("niyama_ttft_seconds", "interactive") == interactive_before
    assert metric(server, 'niyama_ttft_seconds_bucket{le="+Inf",tier="batch"}') == count("niyama_ttft_seconds", "batch")


def test_info_models_metrics_and_api_description(server):
    info = requests.get(server.url + "/info", timeout=10).json()
    assert info["max_input_tokens"] == 512 and info["max_best_of"] == 2 and info["router"] == "niyama"
    models = requests.get(server.url + "/v1/models", timeout=10).json()
    assert models["object"] == "list" and models["data"][0]["id"] == "tiny-random-llama"
    text = requests.get(server.url + "/metrics", timeout=10).text
    for name in (
        "tgi_request_count",
        "tgi_request_success",
        "tgi_queue_size",
        "tgi_batch_current_size",
        "tgi_batch_max_total_tokens",
        "tgi_request_duration_bucket",
        "tgi_batch_forward_duration_bucket",
        "niyama_slo_attainment",
        "niyama_slo_violations_total",
        "niyama_relegations_total",
        "niyama_queue_depth",
        "niyama_predictor_error",
    ):
        assert f"\n{name}" in text, name  # fmt: skip
    assert "tgi_request_count_total" not in text
    spec = requests.get(server.url + "/api-doc/openapi.json", timeout=10).json()
    assert {"/generate", "/generate_stream", "/v1/chat/completions"} <= set(spec["paths"])
    assert "QosRequest" in spec["components"]["schemas"]
    assert any(p["name"] == "x-qos-tier" for p in spec["paths"]["/generate"]["post"]["parameters"])
    assert requests.get(server.url + "/docs", timeout=10).status_code == 200
    tokens = requests.post(server.url + "/tokenize", json={"inputs": "Hello café"}, timeout=10).json()
    assert tokens == [{"id": 19556, "text": "Hello", "start": 0, "stop": 5},
                      {"id": 37366, "text": " café", "start": 5, "stop": 10}]  # fmt: skip
    missing = requests.get(server.url + "/nowhere", timeout=10)
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"
