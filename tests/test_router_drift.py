"""The router's drift fixes measured against TGI's behaviour as its source shows it."""

import json

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
    body = {"prompt": "Tell me a story", "temperature": 0} | extra
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


def sse_data(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [line.removeprefix("data: ") for line in response.text.split("\n\n") if line.startswith("data: ")]


def test_chat_echoes_the_requests_model_and_completions_name_the_served_one(server):
    """TGI server.rs chat_completions: `model` is the request's unless none or "tgi"; completions: info.model_id."""
    for sent, shown in (("my-model", "my-model"), ("tgi", "tiny-random-llama"), (None, "tiny-random-llama")):
        body = chat_body(max_tokens=2, **({} if sent is None else {"model": sent}))
        assert post(server, "/v1/chat/completions", body).json()["model"] == shown
        chunks = sse_data(post(server, "/v1/chat/completions", {**body, "stream": True}))
        assert {json.loads(chunk)["model"] for chunk in chunks if chunk != "[DONE]"} == {shown}
    body = {"prompt": "a", "max_tokens": 2, "model": "my-model"}
    assert post(server, "/v1/completions", body).json()["model"] == "tiny-random-llama"
    chunks = sse_data(post(server, "/v1/completions", {**body, "stream": True}))
    assert {json.loads(chunk)["model"] for chunk in chunks[:-1]} == {"tiny-random-llama"}


def test_completion_streams_have_tgis_chunk_shapes_on_the_wire(server):
    """TGI server.rs completions (stream): Chunk with finish_reason "" and no usage; the last token's chunk is a
    CompletionFinal with the raw finish reason and that prompt's usage; then [DONE]."""
    prompts = ["Tell me a story", "Hi"]
    body = {"prompt": prompts, "max_tokens": 3, "temperature": 0, "stream": True}
    data = sse_data(post(server, "/v1/completions", body))
    assert data[-1] == "[DONE]"
    chunks = [json.loads(chunk) for chunk in data[:-1]]
    assert len(chunks) == 6
    for index, prompt in enumerate(prompts):
        mine = [chunk for chunk in chunks if chunk["choices"][0]["index"] == index]
        for chunk in mine[:-1]:
            assert set(chunk) == {"id", "object", "created", "model", "system_fingerprint", "choices"}
            assert chunk["object"] == "text_completion" and chunk["choices"][0]["finish_reason"] == ""
        last = mine[-1]
        assert last["choices"][0]["finish_reason"] == "length"
        prompt_tokens = len(real_tokenizer().encode(prompt))
        assert last["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": 3,
                                 "total_tokens": prompt_tokens + 3}  # fmt: skip
        assert set(last["choices"][0]) == {"index", "text", "logprobs", "finish_reason"}


def test_multi_prompt_completion_headers_sum_every_prompt(server):
    """TGI server.rs completions: x-prompt-tokens, x-generated-tokens, times and characters summed over prompts."""
    prompts = ["Tell me a story", "Hi"]
    response = post(server, "/v1/completions", {"prompt": prompts, "max_tokens": 3, "temperature": 0})
    usage = response.json()["usage"]
    assert response.headers["x-prompt-tokens"] == str(usage["prompt_tokens"])
    assert usage["prompt_tokens"] == sum(len(real_tokenizer().encode(prompt)) for prompt in prompts)
    assert response.headers["x-generated-tokens"] == "6" and usage["completion_tokens"] == 6
    assert response.headers["x-compute-characters"] == str(sum(len(prompt) for prompt in prompts))
    for name in ("x-total-time", "x-inference-time", "x-queue-time", "x-validation-time", "x-time-per-token"):
        assert int(response.headers[name]) >= 0
    assert float(response.headers["x-compute-time"]) > 0


def test_chat_n_greedy_gives_n_identical_choices_and_counts_all_tokens(server):
    """TGI lib.rs ChatRequest: `n` is UNUSED (one choice); we give OpenAI's n choices, greedy ones identical."""
    one = post(server, "/v1/chat/completions", chat_body(max_tokens=5)).json()
    response = post(server, "/v1/chat/completions", chat_body(max_tokens=5, n=2))
    answer = response.json()
    assert [choice["index"] for choice in answer["choices"]] == [0, 1]
    assert [choice["message"] for choice in answer["choices"]] == [one["choices"][0]["message"]] * 2
    usage = one["usage"]
    assert answer["usage"] == {**usage, "completion_tokens": 10, "total_tokens": usage["total_tokens"] + 5}
    assert response.headers["x-generated-tokens"] == "10"


def test_sampled_n_choices_differ_and_a_seed_repeats_them(server):
    body = chat_body(max_tokens=8, n=2, temperature=1.0, seed=11)
    first, again = (post(server, "/v1/chat/completions", body).json() for _ in range(2))
    texts = [choice["message"]["content"] for choice in first["choices"]]
    assert texts == [choice["message"]["content"] for choice in again["choices"]]
    assert texts[0] != texts[1]


def test_streamed_n_choices_carry_their_index(server):
    one = post(server, "/v1/chat/completions", chat_body(max_tokens=5)).json()["choices"][0]["message"]["content"]
    data = sse_data(post(server, "/v1/chat/completions", chat_body(max_tokens=5, n=2, stream=True,
                                                                 stream_options={"include_usage": True})))  # fmt: skip
    chunks = [json.loads(chunk) for chunk in data[:-1]]
    texts = {0: "", 1: ""}
    for chunk in chunks[:-1]:
        (choice,) = chunk["choices"]
        texts[choice["index"]] += choice["delta"]["content"]
    assert texts == {0: one, 1: one}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 10


def test_completion_n_gives_each_prompt_n_choices_in_order(server):
    prompts = ["Tell me a story", "Hi"]
    singles = [completion_text(server, prompt=prompt, max_tokens=4) for prompt in prompts]
    answer = post(server, "/v1/completions", {"prompt": prompts, "max_tokens": 4, "temperature": 0, "n": 2}).json()
    assert [choice["index"] for choice in answer["choices"]] == [0, 1, 2, 3]
    assert [choice["text"] for choice in answer["choices"]] == [singles[0]] * 2 + [singles[1]] * 2
    assert answer["usage"]["completion_tokens"] == 16
    data = sse_data(post(server, "/v1/completions", {"prompt": prompts, "max_tokens": 4, "temperature": 0, "n": 2,
                                                     "stream": True}))  # fmt: skip
    texts = ["", "", "", ""]
    for chunk in data[:-1]:
        (choice,) = json.loads(chunk)["choices"]
        texts[choice["index"]] += choice["text"]
    assert texts == [singles[0]] * 2 + [singles[1]] * 2


@pytest.mark.parametrize("n", [0, 3])
def test_n_outside_one_to_max_best_of_is_a_422(server, n):
    for route, body in (("/v1/completions", {"prompt": "a"}), ("/v1/chat/completions", chat_body())):
        response = post(server, route, {**body, "max_tokens": 2, "n": n})
        assert response.status_code == 422
        assert response.json()["error"] == f"Input validation error: `n` must be > 0 and <= 2. Given: {n}"


def test_n_with_tools_is_a_422(server):
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    response = post(server, "/v1/chat/completions", chat_body(max_tokens=2, n=2, tools=[tool]))
    assert response.status_code == 422
    assert response.json()["error"] == "Input validation error: `n` > 1 is not supported with `tools`"


def test_tokenize_ignores_truncate_as_tgi_3(server):
    """TGI 3.x /tokenize (server.rs `tokenize` -> validation.rs `prepare_input(inputs, _truncate, ...)`) never
    truncates: the parameter has been unused since TGI 2.0 (Llava-Next, #1709); validation alone keeps the last N."""
    body = {"inputs": "Tell me a story about a river"}
    full = post(server, "/tokenize", body).json()
    assert len(full) == len(real_tokenizer().encode(body["inputs"])) > 2
    assert post(server, "/tokenize", {**body, "parameters": {"truncate": 2}}).json() == full


def test_real_clients_read_n_choices_and_tgis_completion_stream(server):
    """The openai and huggingface_hub clients parse n choices and TGI's completion chunks ("" then the reason)."""
    from huggingface_hub import InferenceClient
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key="-")
    messages = chat_body()["messages"]
    chat = client.chat.completions.create(model="my-model", messages=messages, max_tokens=3, n=2, temperature=0)
    assert chat.model == "my-model" and [choice.index for choice in chat.choices] == [0, 1]
    stream = list(client.completions.create(model="m", prompt="Hi", max_tokens=3, temperature=0, stream=True))
    assert [chunk.choices[0].finish_reason for chunk in stream] == ["", "", "length"]
    assert stream[-1].usage.completion_tokens == 3
    hub = InferenceClient(base_url=server.url)
    answer = hub.chat_completion(messages, max_tokens=3, n=2, temperature=0)
    assert [choice.index for choice in answer.choices] == [0, 1]
