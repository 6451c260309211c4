"""Chat `tools` as TGI 3.x runs them: a JSON-schema grammar over the offered functions, and its output read back.

TGI's router (`infer/tool_grammar.rs`, `chat.rs`, `lib.rs`) is the reference:
- `tool_choice`: absent or `auto` offers the tools plus `no_tool` ("Open ended
  response with no specific tool selected"); `required` the tools alone; a
  name (a string other than none/auto/required, or `{"function": {"name"}}`)
  that tool alone, 422 `Tool error: Tool with name X not found` if unknown;
  `none` neither tools nor grammar.
- The model writes `{"function": {"_name": NAME, ...arguments}}`: each
  function is an object whose `_name` is the constant name, its parameters'
  properties beside it, `additionalProperties` false unless the tool says
  otherwise. Ours differs from TGI's only in form: the functions are inlined
  under `anyOf` (TGI refers to `#/$functions/...`), and a tool's own `$defs`
  move to the root so its `$ref`s still resolve.
- The prompt: the offered tools as JSON, then `tool_prompt`, appended to the
  last message after `\\n---\\n`; a chat template that reads `tools` gets them
  itself, and only the prompt is appended.
- A `response_format` with `tools` is 422 `Tool error: Grammar and tools are
  mutually exclusive`.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from .errors import ApiError
from .schemas import ChatRequest, FunctionDefinition, Grammar, Tool, ToolChoiceFunction
from .structured import response_format_grammar

NO_TOOL = "no_tool"
TOOL_ERROR = "tool_error"
DEFAULT_TOOL_PROMPT = (
    "\nGiven the functions available, please respond with a JSON for a function call with its proper arguments "
    "that best answers the given prompt. Respond in the format {name: function name, parameters: dictionary of "
    "argument name and its value}.Do not use variables.\n"
)
NO_TOOL_FUNCTION = FunctionDefinition(
    name=NO_TOOL, description="Open ended response with no specific tool selected", parameters={"type": "object"}
)
SEPARATOR = "\n---\n"


def tool_error(message: str) -> ApiError:
    return ApiError(422, f"Tool error: {message}", TOOL_ERROR)


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _parameters(function: FunctionDefinition) -> dict[str, Any]:
    return function.parameters if isinstance(function.parameters, dict) else {"type": "object", "properties": {}}


def _function_schema(function: FunctionDefinition, definitions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One function's object: `_name` first, then its parameters; its `$defs`/`definitions` go to ``definitions``."""
    parameters = _parameters(function)
    for key in ("$defs", "definitions"):
        for name, schema in (parameters.get(key) or {}).items():
            if definitions.setdefault(key, {}).setdefault(name, schema) != schema:
                raise tool_error(f"two tools define `{key}/{name}` differently")
    extra = parameters.get("additionalProperties", False)
    return {
        "type": "object",
        "description": function.description or "",
        "properties": {"_name": {"type": "string", "const": function.name}, **(parameters.get("properties") or {})},
        "required": ["_name", *(parameters.get("required") or [])],
        "additionalProperties": True if extra == "true" else extra,
    }


@dataclass(frozen=True)
class ToolUse:
    """The functions a chat request offers the model (after `tool_choice`) and the prompt that introduces them."""

    functions: tuple[FunctionDefinition, ...]
    tool_prompt: str

    def grammar(self) -> Grammar:
        definitions: dict[str, dict[str, Any]] = {}
        choices = [_function_schema(function, definitions) for function in self.functions]
        schema = {
            "type": "object",
            "properties": {"function": {"anyOf": choices}},
            "required": ["function"],
            "additionalProperties": False,
            **definitions,
        }
        return Grammar(type="json", value=schema)

    def prompt_tools(self) -> list[dict[str, Any]]:
        """The tools as TGI writes them into the prompt (`arguments`: the parameters schema as a JSON string)."""
        return [
            {"type": "function", "function": {"description": f.description, "name": f.name,
                                              "arguments": _compact(_parameters(f))}}
            for f in self.functions
        ]  # fmt: skip

    def template_tools(self) -> list[dict[str, Any]]:
        """The tools in the shape chat templates that read `tools` expect (transformers' convention)."""
        return [
            {"type": "function", "function": {"name": f.name, "description": f.description or "",
                                              "parameters": _parameters(f)}}
            for f in self.functions
        ]  # fmt: skip

    def appended_text(self, template_reads_tools: bool) -> str:
        """What TGI appends to the last message's content."""
        if template_reads_tools:
            return SEPARATOR + self.tool_prompt
        return SEPARATOR + _compact(self.prompt_tools()) + "\n" + self.tool_prompt


def _chosen(tools: list[Tool], choice: str | ToolChoiceFunction | None) -> list[FunctionDefinition]:
    functions = [tool.function for tool in tools]
    if choice is None or choice == "auto":
        return [*functions, NO_TOOL_FUNCTION]
    if choice == "required":
        return functions
    if choice == "none":
        return []
    name = choice if isinstance(choice, str) else choice.function.name
    chosen = [function for function in functions if function.name == name]
    if not chosen:
        raise tool_error(f"Tool with name {name} not found")
    return chosen[:1]


def tool_use(body: ChatRequest) -> ToolUse | None:
    """The tools this request offers the model; None when it has none or `tool_choice` is `none`."""
    if not body.tools:
        return None
    if response_format_grammar(body.response_format) is not None:
        raise tool_error("Grammar and tools are mutually exclusive")
    functions = _chosen(body.tools, body.tool_choice)
    if not functions:
        return None
    return ToolUse(tuple(functions), body.tool_prompt or DEFAULT_TOOL_PROMPT)


def chat_grammar(body: ChatRequest, tools: ToolUse | None) -> Grammar | None:
    return tools.grammar() if tools is not None else response_format_grammar(body.response_format)


def tool_calls_text(calls: list[dict[str, Any]]) -> str:
    """An earlier assistant turn's `tool_calls` as the text the template sees (TGI: the calls as JSON)."""
    rendered = []
    for call in calls:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        rendered.append({
            "id": str(call.get("id", "")), "type": call.get("type", "function"),
            "function": {"description": function.get("description"), "name": function.get("name"),
                         "arguments": arguments if isinstance(arguments, str) else _compact(arguments)},
        })  # fmt: skip
    return _compact(rendered)


def next_tool_call_id(body: ChatRequest) -> str:
    """TGI's id for the new call: one past the largest integer id in the conversation, "0" if none, else a UUID."""
    ids = [str(call.get("id", "")) for message in body.messages for call in message.tool_calls or []]
    if not all(i.isdigit() for i in ids):
        return str(uuid.uuid4())
    return str(max((int(i) + 1 for i in ids), default=0))


# `{"function": {"_name": "NAME"` at the start of the constrained output, whatever the whitespace.
NAME = re.compile(r'\s*\{\s*"function"\s*:\s*\{\s*"_name"\s*:\s*"((?:[^"\\]|\\.)*)"')
CLOSING = re.compile(r"[}\s]*\Z")


class ToolCallSplitter:
    """The constrained output, as it streams, split into the function's name and its arguments' JSON text.

    The arguments are the function object less `_name`: `{` is sent with the
    name, then the text after `_name` (its comma dropped), then everything but
    the outer object's closing brace, which is held back until the end.
    """

    def __init__(self) -> None:
        self.text = ""
        self.name: str | None = None
        self._skipping = True  # between the name and its arguments: whitespace and one comma
        self._held = ""  # trailing braces and whitespace: one of them closes the outer object

    def feed(self, delta: str) -> str:
        """The arguments' text that ``delta`` releases (the first piece, `{`, comes with the name)."""
        self.text += delta
        if self.name is None:
            match = NAME.match(self.text)
            if match is None:
                return ""
            self.name = json.loads(f'"{match.group(1)}"')
            return "{" + self._release(self.text[match.end() :])
        return self._release(delta)

    def _release(self, text: str) -> str:
        if self._skipping:
            text = text.lstrip()
            if not text:
                return ""
            self._skipping = False
            text = text.removeprefix(",")
        text = self._held + text
        closing = CLOSING.search(text)
        self._held = closing.group() if closing else ""
        return text[: len(text) - len(self._held)]

    def finish(self) -> str:
        """The rest of the arguments at the end: the held text less the outer closing brace (if it came)."""
        held, self._held = self._held, ""
        if not self.complete:
            return held
        held = held.rstrip()
        return held[:-1]

    @property
    def complete(self) -> bool:
        try:
            json.loads(self.text)
        except json.JSONDecodeError:
            return False
        return True


@dataclass(frozen=True)
class ToolCallText:
    name: str
    arguments: str  # JSON text (incomplete if the generation was cut short)


def parse_tool_call(text: str) -> ToolCallText:
    """The call in a finished constrained output: TGI's compact arguments when complete, else what came."""
    try:
        function = dict(json.loads(text)["function"])
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        splitter = ToolCallSplitter()
        arguments = splitter.feed(text) + splitter.finish()
        if splitter.name is None:
            raise tool_error(f"Failed to parse generated text: {error} {text!r}") from None
        return ToolCallText(splitter.name, arguments)
    name = function.pop("_name", None)
    if not isinstance(name, str):
        raise tool_error(f"Failed to parse generated text: no function name {text!r}")
    return ToolCallText(name, _compact(function))
