"""Chat `tools` as TGI 3.x answers them, on a tiny random Llama whose worker follows grammars.

The wire shapes, the prompt text and the error messages are TGI's router
source (`lib.rs`, `chat.rs`, `infer/tool_grammar.rs`, `infer/chat_template.rs`);
the calls' arguments validate against the tool's parameters because the
grammar makes the model write them (the model itself is random).
"""

import json

import httpx
import jsonschema
import pytest
from openai import OpenAI
from router_server import real_tokenizer, tiny_parts, tiny_server

from niyama.router.schemas import ChatRequest
from niyama.router.tools import DEFAULT_TOOL_PROMPT, ToolCallSplitter, parse_tool_call, tool_use

EOS = 2  # <|im_end|>, the tiny model's end of sequence in these tests
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {
    "type": "object",
    "properties": {
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["unit", "days"],
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                       "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]}}},
]  # fmt: skip
GREEDY = {"max_tokens": 120, "temperature": 0}


@pytest.fixture(scope="module")
def url():
    with tiny_server(parts=tiny_parts(eos=frozenset({EOS}), grammars=True)) as server:
        yield server.url


def chat(url: str, **body) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", json={"messages": MESSAGES, **GREEDY, **body}, timeout=60)


def stream_chunks(url: str, **body) -> list:
    payload = {"messages": MESSAGES, **GREEDY, "stream": True, **body}
    with httpx.stream("POST", url + "/v1/chat/completions", json=payload, timeout=60) as answer:
        assert answer.status_code == 200
        lines = [line.removeprefix("data: ") for line in answer.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}},
                                    "get_weather", {"function": {"name": "get_weather"}}])  # fmt: skip
def test_a_required_or_named_tool_is_called_in_tgi_shape(url, choice):
    answer = chat(url, tools=TOOLS, tool_choice=choice).json()
    (result,) = answer["choices"]
    (call,) = result["message"]["tool_calls"]
    assert result["message"] == {"role": "assistant", "tool_calls": [call]}
    assert call["id"] == "0" and call["type"] == "function" and call["function"]["description"] is None
    if choice != "required":
        assert call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])  # a JSON string, as TGI 3.x
    parameters = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}
    jsonschema.validate(arguments, parameters[call["function"]["name"]])
    assert call["function"]["arguments"] == json.dumps(arguments, separators=(",", ":"))
    assert result["finish_reason"] == "stop" and answer["usage"]["completion_tokens"] > 5


def test_the_openai_client_reads_the_call_and_streams_the_same_call(url):
    client = OpenAI(base_url=url + "/v1", api_key="-")
    options = dict(model="tgi", messages=MESSAGES, tools=TOOLS, tool_choice="required", max_tokens=120, temperature=0)
    (call,) = client.chat.completions.create(**options).choices[0].message.tool_calls
    chunks = list(client.chat.completions.create(**options, stream=True))
    deltas = [chunk.choices[0].delta.tool_calls[0] for chunk in chunks if chunk.choices]
    assert deltas[0].function.name == call.function.name and deltas[0].id == call.id and deltas[0].index == 0
    assert all(delta.function.name is None for delta in deltas[1:])
    streamed = "".join(delta.function.arguments for delta in deltas)
    assert json.loads(streamed) == json.loads(call.function.arguments)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_tool_stream_ends_with_the_finish_reason_then_usage(url):
    chunks = stream_chunks(url, tools=TOOLS, tool_choice="get_time", stream_options={"include_usage": True})
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks[:-1]]
    assert deltas[0] == {
        "role": "assistant",
        "tool_calls": [
            {"index": 0, "id": "0", "type": "function", "function": {"name": "get_time", "arguments": '{ "'}}
        ],
    }
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks[:-1]] == [None] * (len(chunks) - 2) + ["stop"]
    arguments = json.loads("".join(delta["tool_calls"][0]["function"]["arguments"] for delta in deltas))
    assert arguments["zone"] in ("UTC", "CET")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 5


def test_no_tool_is_answered_again_without_tools_as_tgi_does(url):
    # A tool the user calls `no_tool` and forces: the model can only answer no_tool, TGI's open-ended choice.
    forced = [{"type": "function", "function": {"name": "no_tool", "parameters": {"type": "object"}}}]
    plain = chat(url, max_tokens=12).json()["choices"][0]["message"]
    answer = chat(url, max_tokens=12, tools=forced, tool_choice="no_tool").json()
    assert answer["choices"][0]["message"] == plain and "tool_calls" not in plain
    plain_stream = stream_chunks(url, max_tokens=12)
    streamed = stream_chunks(url, max_tokens=12, tools=forced, tool_choice="no_tool")
    assert [c["choices"][0]["delta"] for c in streamed] == [c["choices"][0]["delta"] for c in plain_stream]
    assert "".join(c["choices"][0]["delta"]["content"] for c in streamed) == plain["content"]


def test_tool_choice_none_answers_as_if_there_were_no_tools(url):
    plain = chat(url, max_tokens=12).json()["choices"][0]["message"]
    assert chat(url, max_tokens=12, tools=TOOLS, tool_choice="none").json()["choices"][0]["message"] == plain
    prompt = httpx.post(url + "/chat_tokenize", json={"messages": MESSAGES, "tools": TOOLS, "tool_choice": "none"})
    assert "get_weather" not in prompt.json()["templated_text"]


def test_the_tools_and_tool_prompt_are_appended_to_the_last_message_as_tgi_writes_them(url):
    tools = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}]
    listed = (
        '[{"type":"function","function":{"description":"d","name":"f","arguments":"{\\"type\\":\\"object\\"}"}},'
        '{"type":"function","function":{"description":"Open ended response with no specific tool selected",'
        '"name":"no_tool","arguments":"{\\"type\\":\\"object\\"}"}}]'
    )
    for tool_prompt, expected_prompt in ((None, DEFAULT_TOOL_PROMPT), ("Use a tool.", "Use a tool.")):
        body = {"messages": MESSAGES, "tools": tools, "tool_prompt": tool_prompt}
        templated = httpx.post(url + "/chat_tokenize", json=body).json()["templated_text"]
        content = MESSAGES[0]["content"] + "\n---\n" + listed + "\n" + expected_prompt
        assert templated == real_tokenizer().chat_prompt([{"role": "user", "content": content}])
    assert DEFAULT_TOOL_PROMPT.startswith("\nGiven the functions available, please respond with a JSON for a function")


def test_earlier_calls_are_in_the_prompt_and_the_next_id_follows_them(url):
    earlier = {"id": "0", "type": "function", "function": {"name": "get_time", "arguments": '{"zone":"UTC"}'}}
    messages = [*MESSAGES, {"role": "assistant", "content": None, "tool_calls": [earlier]},
                {"role": "tool", "tool_call_id": "0", "content": "12:00"}]  # fmt: skip
    templated = httpx.post(url + "/chat_tokenize", json={"messages": messages}).json()["templated_text"]
    assert '[{"id":"0","type":"function","function":{"description":null,"name":"get_time",' in templated
    answer = httpx.post(url + "/v1/chat/completions", timeout=60, json={
        "messages": messages, "tools": TOOLS, "tool_choice": "get_weather", **GREEDY}).json()  # fmt: skip
    assert answer["choices"][0]["message"]["tool_calls"][0]["id"] == "1"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"tools": TOOLS, "tool_choice": "nope"}, "Tool error: Tool with name nope not found"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "Tool error: Tool with name nope not found"),
        ({"tools": TOOLS, "response_format": {"type": "json_object"}},
         "Tool error: Grammar and tools are mutually exclusive"),
    ],
)  # fmt: skip
def test_tool_errors_are_tgis_422(url, body, message):
    answer = chat(url, **body)
    assert answer.status_code == 422
    assert answer.json() == {"error": message, "error_type": "tool_error"}


def test_the_tool_grammar_accepts_exactly_tgis_call_objects():
    body = ChatRequest.model_validate({"messages": MESSAGES, "tools": TOOLS})
    schema = tool_use(body).grammar().value
    jsonschema.validate({"function": {"_name": "get_weather", "unit": "celsius", "days": 3}}, schema)
    jsonschema.validate({"function": {"_name": "no_tool"}}, schema)
    for wrong in ({"function": {"_name": "get_weather", "unit": "celsius"}},
                  {"function": {"_name": "get_time", "zone": "UTC", "extra": 1}}, {"_name": "get_time"}):  # fmt: skip
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, schema)


def test_a_tools_own_definitions_move_to_the_root_so_its_refs_resolve(url):
    parameters = {"type": "object", "properties": {"unit": {"$ref": "#/$defs/Unit"}}, "required": ["unit"],
                  "$defs": {"Unit": {"enum": ["c", "f"]}}}  # fmt: skip
    tools = [{"type": "function", "function": {"name": "temp", "parameters": parameters}}]
    schema = tool_use(ChatRequest.model_validate({"messages": MESSAGES, "tools": tools})).grammar().value
    jsonschema.validate({"function": {"_name": "temp", "unit": "f"}}, schema)
    call = chat(url, tools=tools, tool_choice="temp").json()["choices"][0]["message"]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"])["unit"] in ("c", "f")
    clash = [tools[0], {"type": "function", "function": {"name": "other", "parameters": {
        "type": "object", "$defs": {"Unit": {"enum": ["k"]}}}}}]  # fmt: skip
    answer = chat(url, tools=clash)
    assert answer.status_code == 422
    assert answer.json()["error"] == "Tool error: two tools define `$defs/Unit` differently"


def test_the_stream_splitter_gives_tgis_arguments_for_tgis_own_token_split():
    # The tokens of TGI's chat.rs test `test_chat_stream_tool_get_weather`, and its expected arguments.
    tokens = ['{"', "function", '":', ' {"', "_", "name", '":', ' "', "get", "_current", "_weather", '",', ' "',
              "location", '":', ' "', "San", " Francisco", ",", " CA", '",', ' "', "format", '":', ' "', "c",
              "elsius", '"}}']  # fmt: skip
    splitter = ToolCallSplitter()
    pieces = [splitter.feed(token) for token in tokens]
    assert pieces[:11] == [""] * 11 and splitter.name == "get_current_weather"
    assert "".join(pieces) + splitter.finish() == '{ "location": "San Francisco, CA", "format": "celsius"}'


@pytest.mark.parametrize(
    ("tokens", "arguments"),
    [
        (['{"function": {"_name": "f"', ", ", '"a": 1', "}", "}"], '{ "a": 1}'),  # the comma comes later
        (['{"function": {"_name": "f"}}'], "{}"),  # no arguments
        (['{"function": {"_name": "f", "a": {"b": "}}"}}}'], '{ "a": {"b": "}}"}}'),  # braces in a string
        (['{"function": {"_name": "f", "a": {"b": 1}'], '{ "a": {"b": 1}'),  # cut short: no brace dropped
    ],
)
def test_the_stream_splitter_drops_only_the_outer_brace(tokens, arguments):
    splitter = ToolCallSplitter()
    assert "".join(splitter.feed(token) for token in tokens) + splitter.finish() == arguments


def test_a_finished_output_parses_to_compact_arguments_and_a_cut_one_keeps_its_text():
    assert parse_tool_call('{"function": {"_name": "f", "a": [1, 2]}}').arguments == '{"a":[1,2]}'
    cut = parse_tool_call('{"function": {"_name": "f", "a": [1, ')
    assert (cut.name, cut.arguments) == ("f", '{ "a": [1, ')
    with pytest.raises(Exception, match="Failed to parse generated text"):
        parse_tool_call('{"function": {"_na')
