"""What a constrained request asks for, as plain data: a JSON schema or a regular expression.

The router turns TGI's `grammar`, OpenAI's `response_format` and `tools` into
one `GrammarSpec`; it travels to the worker inside `SamplingParams`, where
the grammar engine (`worker/grammar.py`) compiles it once per distinct spec
and masks each step's logits with it. The grammar library is llguidance
(chosen by measurement, docs/structured_output.md): it imports no torch, and
`GrammarSpec.grammar()` is the one place a spec becomes its grammar, for the
router's check (`grammar_error`, without a tokenizer) and the worker alike.

JSON follows JSON Schema: ``"{}"`` (no constraints) accepts any JSON value;
"any JSON object" (TGI's and OpenAI's ``json_object``) is ``{"type": "object"}``.
Output is compact JSON on one line (``", "`` and ``": "`` between items, no
other whitespace), so a small model cannot wander into endless newlines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

# llguidance's JSON options, over anything the schema's own "x-guidance" says.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(frozen=True, slots=True)
class GrammarSpec:
    kind: Literal["json", "regex"]
    value: str  # "json": the schema as JSON text ("{}": any JSON value); "regex": the pattern, matched in full

    def grammar(self) -> str:
        """The llguidance grammar of this spec; raises ValueError for JSON text that is not a schema object."""
        from llguidance import LLMatcher

        if self.kind == "json":
            return LLMatcher.grammar_from_json_schema(self.value, overrides=JSON_OPTIONS)
        return LLMatcher.grammar_from_regex(self.value)


def grammar_error(spec: GrammarSpec) -> str | None:
    """Why ``spec`` cannot be compiled, in one line (the router's 422), or None when it can."""
    from llguidance import LLMatcher

    what = "JSON schema" if spec.kind == "json" else f"regex {spec.value!r}"
    if spec.kind == "json":
        try:
            json.loads(spec.value)
        except json.JSONDecodeError as error:
            return f"invalid JSON schema: not JSON ({error})"
    try:
        message = LLMatcher.validate_grammar(spec.grammar())
    except ValueError as error:
        message = str(error)
    if not message:
        return None
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    reason = next((line.removeprefix("error: ") for line in lines if line.startswith("error: ")), lines[0])
    if reason == "Expecting object schema to apply options":
        reason = "the schema must be a JSON object"
    return f"invalid {what}: {reason}"
