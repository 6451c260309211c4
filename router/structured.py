"""TGI's `grammar` and OpenAI's `response_format`, turned into the one `GrammarSpec` the worker enforces.

Every route ends here: `/generate` and its siblings send TGI's `grammar`
(`json` with a schema object or a JSON string holding one, `json_object`,
`json_schema` with `{"name", "schema"}`, `regex`); the chat and completion
routes map `response_format` (and chat's `tools`, see `tools`) onto the same
TGI `Grammar`, so one function checks them all. A schema or a regex the
grammar library refuses is TGI's 422, `grammar is not valid: ` and the
library's reason on one line. Unlike TGI, a schema needs no `properties`
(TGI's Python grammar compiler needed them; ours does not).
"""

from __future__ import annotations

import json
from typing import Any

from niyama.engine.grammar import GrammarSpec, grammar_error

from .errors import ApiError, validation_error
from .schemas import Grammar, ResponseFormat

ANY_OBJECT: dict[str, Any] = {"type": "object"}  # `json_object`: any JSON object


def invalid(reason: str) -> ApiError:
    return validation_error(f"grammar is not valid: {' '.join(reason.split())}")


def _schema(value: Any) -> dict[str, Any]:
    """A schema object, from the object itself or from a JSON string holding it (TGI accepts both)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise invalid(f"the schema is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise invalid("a JSON schema must be an object")
    return value


def _json_schema(grammar: Grammar) -> dict[str, Any]:
    if grammar.value is None:
        if grammar.type == "json_object":
            return ANY_OBJECT
        raise invalid(f"a `{grammar.type}` grammar needs its schema in `value`")
    if grammar.type == "json_schema":
        config = _schema(grammar.value)
        return ANY_OBJECT if config.get("schema") is None else _schema(config["schema"])
    return _schema(grammar.value)


def grammar_spec(grammar: Grammar) -> GrammarSpec:
    """The checked spec of TGI's `grammar` (422 when the library refuses it)."""
    if grammar.type == "regex":
        if not isinstance(grammar.value, str):
            raise invalid("a `regex` grammar's value must be a string")
        spec = GrammarSpec("regex", grammar.value)
    else:
        spec = GrammarSpec("json", json.dumps(_json_schema(grammar), ensure_ascii=False))
    reason = grammar_error(spec)
    if reason is not None:
        raise invalid(reason)
    return spec


def response_format_grammar(response_format: ResponseFormat | None) -> Grammar | None:
    """OpenAI's `response_format` as TGI's `grammar`; `text` (or none) means unconstrained."""
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_schema" and response_format.json_schema is not None:
        return Grammar(type="json_schema", value=response_format.json_schema.model_dump(by_alias=True))
    return Grammar(type=response_format.type, value=response_format.value)
