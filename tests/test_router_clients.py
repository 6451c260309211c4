"""End to end: `niyama serve` with the default model, driven by the real clients exactly as their docs show.

One server process for the module (on a free local port, the reference
latency model instead of a start-up profile), plus one that is stopped with
SIGTERM mid-stream. Only the base URL differs from each client's own examples.
"""

import asyncio
import signal

import pytest
import requests
from huggingface_hub import InferenceClient
from openai import OpenAI
from support import reference_greedy, served
from text_generation import AsyncClient, Client

from niyama.bench.servers import start_server, stop
from niyama.bench.sse import json_events

pytestmark = pytest.mark.slow

PROMPT = "The capital of France is"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


SERVE = ["--latency-profile", "a100-llama3-8b", "--max-total-tokens", "2048", "--log-level", "warning"]


@pytest.fixture(scope="module")
def url():
    yield from served(SERVE)


def test_greedy_generate_is_model_generate_token_for_token(url, default_model):
    tokenizer = default_model.tokenizer
    prompt_ids = tokenizer(PROMPT)["input_ids"]
    expected = reference_greedy(default_model.model, prompt_ids, 24)
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 24, "details": True}}
    result = requests.post(url + "/generate", json=body, timeout=120).json()
    assert [t["id"] for t in result["details"]["tokens"]] == expected
    assert result["generated_text"] == tokenizer.decode(expected, skip_special_tokens=True)


def test_text_generation_client(url):
    client = Client(url, timeout=120)
    response = client.generate(PROMPT, max_new_tokens=12, decoder_input_details=True, top_n_tokens=2)
    assert response.details.finish_reason in ("length", "eos_token")
    assert response.details.generated_tokens == len(response.details.tokens) <= 12
    assert response.details.prefill[0].logprob is None and len(response.details.prefill) > 1
    assert len(response.details.top_tokens[0]) == 2 and response.details.seed is None
    stop = response.generated_text.strip().split()[0]
    stopped = client.generate(PROMPT, max_new_tokens=12, stop_sequences=[stop])
    assert stopped.details.finish_reason == "stop_sequence" and stopped.generated_text.endswith(stop)
    seeded = client.generate(PROMPT, max_new_tokens=8, do_sample=True, seed=7)
    assert seeded.details.seed == 7
    assert client.generate(PROMPT, max_new_tokens=8, do_sample=True, seed=7).generated_text == seeded.generated_text
    text = ""
    for event in client.generate_stream(PROMPT, max_new_tokens=12):
        if not event.token.special:
            text += event.token.text
    assert text == response.generated_text
    assert event.generated_text == response.generated_text and event.details.generated_tokens == 12
    chat = client.chat(messages=MESSAGES, max_tokens=16, seed=1)
    assert chat.choices[0].message.content and chat.choices[0].finish_reason in ("length", "stop")
    chunks = list(client.chat(messages=MESSAGES, max_tokens=16, seed=1, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == chat.choices[0].message.content


def test_text_generation_async_client(url):
    async def scenario():
        client = AsyncClient(url, timeout=120)
        response = await client.generate(PROMPT, max_new_tokens=10, decoder_input_details=True, top_n_tokens=3,
                                         stop_sequences=["\n\n\n"], seed=3)  # fmt: skip
        assert response.details.generated_tokens == len(response.details.tokens)
        assert len(response.details.top_tokens[0]) == 3
        tokens = [event.token.text async for event in client.generate_stream(PROMPT, max_new_tokens=10)]
        assert "".join(tokens) == response.generated_text
        chat = await client.chat(messages=MESSAGES, max_tokens=12, seed=1)
        streamed = [chunk async for chunk in await client.chat(messages=MESSAGES, max_tokens=12, seed=1, stream=True)]
        assert "".join(c.choices[0].delta.content or "" for c in streamed) == chat.choices[0].message.content

    asyncio.run(scenario())


def test_huggingface_hub_inference_client(url):
    client = InferenceClient(base_url=url)
    # It posts to `/`, where an unset return_full_text means true (TGI, for a text-generation model).
    text = client.text_generation(PROMPT, max_new_tokens=12)
    details = client.text_generation(PROMPT, max_new_tokens=12, details=True)
    assert details.generated_text == text and details.details.generated_tokens == 12
    streamed = "".join(client.text_generation(PROMPT, max_new_tokens=12, stream=True))
    assert text == PROMPT + streamed
    events = list(client.text_generation(PROMPT, max_new_tokens=12, stream=True, details=True))
    assert events[-1].generated_text == text and events[-1].details.finish_reason == "length"
    chat = client.chat_completion(MESSAGES, max_tokens=16, seed=1)
    content = chat.choices[0].message.content
    assert content and chat.usage.completion_tokens <= 16
    chunks = list(client.chat_completion(MESSAGES, max_tokens=16, seed=1, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == content


def test_openai_client(url):
    client = OpenAI(base_url=url + "/v1", api_key="not-needed")
    chat = client.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=16, temperature=0)
    content = chat.choices[0].message.content
    assert content and chat.usage.prompt_tokens > 0
    stream = client.chat.completions.create(model="any", messages=MESSAGES, max_tokens=16, temperature=0, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == content
    completion = client.completions.create(model="any", prompt=PROMPT, max_tokens=12, temperature=0)
    text = completion.choices[0].text
    stream = client.completions.create(model="any", prompt=PROMPT, max_tokens=12, temperature=0, stream=True)
    assert "".join(chunk.choices[0].text for chunk in stream) == text
    batch = client.completions.create(model="any", prompt=[PROMPT, "Hello"], max_tokens=4, temperature=0)
    assert [choice.index for choice in batch.choices] == [0, 1] and batch.choices[0].text == text[
        : len(batch.choices[0].text)
    ]


def test_sigterm_lets_running_requests_finish_within_the_grace_period_then_exits_0():
    process, base = start_server([*SERVE, "--grace-period", "1"], timeout=180)
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 1500, "ignore_eos": True}}
    try:
        with requests.post(base + "/generate_stream", json=body, stream=True, timeout=120) as response:
            lines = response.iter_lines()
            next(lines)
            process.send_signal(signal.SIGTERM)
            events = list(json_events(lines))
        assert process.wait(timeout=60) == 0
    finally:
        stop(process)
    assert events[-1] == {"error": "Request failed during generation: the server shut down before this request "
                          "finished", "error_type": "generation"}  # fmt: skip
    assert len(events) > 1  # tokens kept coming during the grace period
