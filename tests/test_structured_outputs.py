"""Structured output on every route: TGI's `grammar`, OpenAI's `response_format`, tools through the real clients.

The first tests run a tiny random Llama whose worker follows grammars (fast:
the routes, the mapping, the 422s). The `slow` ones are issue 14's acceptance:
`niyama serve` with the default model, driven by text-generation 0.7.0,
huggingface_hub and openai exactly as their docs show, and every structured
answer over `json_schemas.SCHEMAS` (32 schemas, greedy and sampled, all at
once) must parse and validate against its schema.
"""

import json
import re
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Literal

import httpx
import jsonschema
import pytest
from huggingface_hub import InferenceClient
from json_schemas import SCHEMAS
from openai import OpenAI
from pydantic import BaseModel, Field
from router_server import tiny_parts, tiny_server
from support import served
from text_generation import Client
from text_generation.types import Grammar as TgiGrammar
from text_generation.types import GrammarType

from niyama.engine.grammar import GrammarSpec
from niyama.router.schemas import Grammar, ResponseFormat
from niyama.router.structured import grammar_spec, response_format_grammar

EOS = 2
SMALL = {
    "type": "object",
    "properties": {"size": {"enum": ["S", "M", "L"]}, "count": {"type": "integer", "minimum": 0, "maximum": 99},
                   "ok": {"type": "boolean"}},
    "required": ["size", "count", "ok"], "additionalProperties": False,
}  # fmt: skip
DATE = r"20[0-9]{2}-(0[1-9]|1[0-2])-[0-3][0-9]"
MESSAGES = [{"role": "user", "content": "Describe a T-shirt order as JSON."}]


@pytest.fixture(scope="module")
def tiny():
    with tiny_server(parts=tiny_parts(eos=frozenset({EOS}), grammars=True)) as server:
        yield server.url


def generated_texts(url: str, route: str, parameters: dict) -> list[str]:
    body = {"inputs": "An order:", "parameters": {"max_new_tokens": 60, **parameters}}
    if route == "/generate_stream":
        with httpx.stream("POST", url + route, json=body, timeout=60) as answer:
            events = [json.loads(line[5:]) for line in answer.iter_lines() if line.startswith("data:")]
        return ["".join(e["token"]["text"] for e in events if not e["token"]["special"]), events[-1]["generated_text"]]
    answer = httpx.post(url + route, json=body, timeout=60).json()
    return [(answer[0] if route == "/" else answer)["generated_text"]]


@pytest.mark.parametrize("route", ["/generate", "/", "/generate_stream"])
@pytest.mark.parametrize("sampling", [{}, {"do_sample": True, "seed": 4}])
@pytest.mark.parametrize("value", [SMALL, json.dumps(SMALL)], ids=["object", "string"])
def test_a_json_grammar_shapes_the_output_on_every_tgi_route(tiny, route, sampling, value):
    grammar = {"type": "json", "value": value}
    for text in generated_texts(tiny, route, {"grammar": grammar, "return_full_text": False, **sampling}):
        jsonschema.validate(json.loads(text), SMALL)


@pytest.mark.parametrize("sampling", [{}, {"do_sample": True, "seed": 9}])
def test_a_regex_grammar_matches_the_whole_output(tiny, sampling):
    (text,) = generated_texts(tiny, "/generate", {"grammar": {"type": "regex", "value": DATE}, **sampling})
    assert re.fullmatch(DATE, text)


@pytest.mark.parametrize(
    ("grammar", "reason"),
    [
        ({"type": "regex", "value": "a(b"}, "unclosed group"),
        ({"type": "regex", "value": {"not": "a string"}}, "a `regex` grammar's value must be a string"),
        ({"type": "json", "value": "{not json"}, "the schema is not JSON: Expecting property name"),
        ({"type": "json", "value": 3}, "a JSON schema must be an object"),
        ({"type": "json"}, "a `json` grammar needs its schema in `value`"),
        ({"type": "json", "value": {"type": "strin"}}, "strin"),
        ({"type": "json", "value": {"properties": {"a": {"$ref": "#/$defs/missing"}}}}, "missing"),
    ],
)
def test_an_invalid_grammar_is_a_422_with_the_reason_in_one_line(tiny, grammar, reason):
    answer = httpx.post(tiny + "/generate", json={"inputs": "x", "parameters": {"grammar": grammar}})
    assert answer.status_code == 422 and answer.json()["error_type"] == "validation"
    message = answer.json()["error"]
    assert message.startswith("Input validation error: grammar is not valid: ") and reason in message
    assert "\n" not in message


def chat(url: str, **body) -> dict:
    body = {"messages": MESSAGES, "max_tokens": 60, "temperature": 0, **body}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=60).json()


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_schema", "json_schema": {"name": "order", "schema": SMALL, "strict": True}},
        {"type": "json", "value": SMALL},  # TGI's own form
        {"type": "json_schema", "value": {"name": "order", "schema": SMALL}},  # TGI's json_schema
    ],
)
def test_response_format_shapes_chat_and_completion_answers(tiny, response_format):
    content = chat(tiny, response_format=response_format)["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(content), SMALL)
    body = {"prompt": "An order:", "max_tokens": 60, "response_format": response_format, "seed": 3}
    completion = httpx.post(tiny + "/v1/completions", json=body, timeout=60).json()
    jsonschema.validate(json.loads(completion["choices"][0]["text"]), SMALL)


def test_response_format_text_is_no_constraint(tiny):
    assert chat(tiny, response_format={"type": "text"})["choices"] == chat(tiny)["choices"]


def test_every_form_of_a_schema_is_one_grammar_and_json_object_is_any_object():
    schema = GrammarSpec("json", json.dumps(SMALL))
    forms = [
        Grammar(type="json", value=SMALL),
        Grammar(type="json", value=json.dumps(SMALL)),
        Grammar(type="json_object", value=SMALL),
        Grammar(type="json_schema", value={"name": "n", "schema": SMALL}),
        response_format_grammar(ResponseFormat.model_validate(
            {"type": "json_schema", "json_schema": {"name": "n", "schema": SMALL, "strict": True}})),
    ]  # fmt: skip
    assert {grammar_spec(form) for form in forms} == {schema}
    any_object = GrammarSpec("json", '{"type": "object"}')
    assert grammar_spec(response_format_grammar(ResponseFormat(type="json_object"))) == any_object
    assert grammar_spec(Grammar(type="json_object")) == any_object
    assert response_format_grammar(ResponseFormat(type="text")) is None


# -- acceptance: the default model through the real clients ------------------------------------------------------

SERVE = ["--latency-profile", "a100-llama3-8b", "--max-total-tokens", "2048", "--log-level", "warning"]
MAX_TOKENS = 600
WEATHER_TOOLS = [{"type": "function", "function": {
    "name": "get_current_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string", "maxLength": 40, "description": "The city, e.g. San Francisco"},
        "format": {"enum": ["celsius", "fahrenheit"]}}, "required": ["location", "format"]}}}]  # fmt: skip


@pytest.fixture(scope="module")
def url():
    yield from served(SERVE)


def _text_generation(url: str, name: str, schema: dict, sampled: bool) -> str:
    client = Client(url, timeout=300)
    grammar = TgiGrammar(type=GrammarType.Json, value=schema)
    sampling = {"do_sample": True, "seed": 1} if sampled else {}
    prompt = f"Here is a {name.replace('_', ' ')} as JSON:\n"
    return client.generate(prompt, max_new_tokens=MAX_TOKENS, grammar=grammar, **sampling).generated_text


def _huggingface_hub(url: str, name: str, schema: dict, sampled: bool) -> str:
    client = InferenceClient(base_url=url, timeout=300)
    response_format = {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
    answer = client.chat_completion(
        [{"role": "user", "content": f"Give me a {name.replace('_', ' ')} as JSON."}], max_tokens=MAX_TOKENS,
        response_format=response_format, temperature=1.0 if sampled else 0.0, seed=2,
    )  # fmt: skip
    return answer.choices[0].message.content


def _openai(url: str, name: str, schema: dict, sampled: bool) -> str:
    client = OpenAI(base_url=url + "/v1", api_key="-", timeout=300)
    response_format = {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
    answer = client.chat.completions.create(
        model="tgi", messages=[{"role": "user", "content": f"A {name.replace('_', ' ')}, as JSON."}],
        max_tokens=MAX_TOKENS, response_format=response_format, temperature=1.0 if sampled else 0.0, seed=3,
    )  # fmt: skip
    return answer.choices[0].message.content


CLIENTS = (_text_generation, _huggingface_hub, _openai)


@pytest.mark.slow
def test_every_structured_answer_validates_over_32_schemas_greedy_and_sampled(url):
    jobs = [(client, name, schema, sampled)
            for index, (name, schema) in enumerate(SCHEMAS.items())
            for sampled, client in ((False, CLIENTS[index % 3]), (True, CLIENTS[(index + 1) % 3]))]  # fmt: skip
    assert len(SCHEMAS) >= 30 and len(jobs) == 2 * len(SCHEMAS)
    with ThreadPoolExecutor(len(jobs)) as pool:
        texts = list(pool.map(lambda job: job[0](url, *job[1:]), jobs))
    failures = []
    for (client, name, schema, sampled), text in zip(jobs, texts):
        try:
            # Decimals: `multipleOf: 0.1` is exact on 5.8 (floats say 5.8 / 0.1 = 57.99999).
            exact = json.loads(json.dumps(schema), parse_float=Decimal)
            jsonschema.validate(json.loads(text, parse_float=Decimal), exact)
        except (json.JSONDecodeError, jsonschema.ValidationError) as error:
            failures.append(f"{name} {client.__name__} sampled={sampled}: {error.__class__.__name__} {text!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_text_generation_regex_grammar(url):
    client = Client(url, timeout=120)
    for sampling in ({}, {"do_sample": True, "seed": 5}):
        answer = client.generate("Today's date is ", max_new_tokens=30,
                                 grammar=TgiGrammar(type=GrammarType.Regex, value=DATE), **sampling)  # fmt: skip
        assert re.fullmatch(DATE, answer.generated_text) and answer.details.finish_reason == "eos_token"


@pytest.mark.slow
def test_huggingface_hub_tool_calls_stream_and_not(url):
    client = InferenceClient(base_url=url, timeout=120)
    messages = [{"role": "user", "content": "What's the weather like in Paris today?"}]
    for choice in ("required", {"function": {"name": "get_current_weather"}}):
        answer = client.chat_completion(messages, tools=WEATHER_TOOLS, tool_choice=choice, max_tokens=200, seed=1)
        (call,) = answer.choices[0].message.tool_calls
        assert call.function.name == "get_current_weather"
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, WEATHER_TOOLS[0]["function"]["parameters"])
        chunks = list(client.chat_completion(messages, tools=WEATHER_TOOLS, tool_choice=choice, max_tokens=200,
                                             seed=1, stream=True))  # fmt: skip
        deltas = [chunk.choices[0].delta.tool_calls[0].function for chunk in chunks]
        assert deltas[0].name == "get_current_weather"
        assert json.loads("".join(delta.arguments for delta in deltas)) == arguments
    auto = client.chat_completion(messages, tools=WEATHER_TOOLS, max_tokens=60, seed=1).choices[0].message
    assert auto.tool_calls or auto.content  # the model's own choice: a call, or (no_tool) an ordinary answer
    formatted = client.chat_completion(messages, max_tokens=MAX_TOKENS, response_format={"type": "json_object"})
    assert isinstance(json.loads(formatted.choices[0].message.content), dict)


class City(BaseModel):
    name: str = Field(max_length=30)
    country: str = Field(max_length=30)
    population_millions: float = Field(ge=0, le=40)
    climate: Literal["tropical", "dry", "temperate", "continental", "polar"]


@pytest.mark.slow
def test_openai_tools_json_schema_and_parse(url):
    client = OpenAI(base_url=url + "/v1", api_key="-", timeout=120)
    messages = [{"role": "user", "content": "What's the weather like in Boston in fahrenheit?"}]
    answer = client.chat.completions.create(model="tgi", messages=messages, tools=WEATHER_TOOLS,
                                            tool_choice="required", max_tokens=200, temperature=0)  # fmt: skip
    (call,) = answer.choices[0].message.tool_calls
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_TOOLS[0]["function"]["parameters"])
    assert answer.usage.completion_tokens > 5
    parsed = client.beta.chat.completions.parse(
        model="tgi", messages=[{"role": "user", "content": "Describe Lisbon."}], response_format=City,
        max_tokens=MAX_TOKENS, temperature=0,
    )  # fmt: skip
    city = parsed.choices[0].message.parsed
    assert isinstance(city, City) and city.name
