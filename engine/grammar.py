"""What a constrained request asks for, as plain data: a JSON schema or a regular expression.

The router turns TGI's `grammar`, OpenAI's `response_format` and `tools` into
one `GrammarSpec`; it travels to the worker inside `SamplingParams`, where
the grammar engine compiles it (once per distinct spec) and masks each step's
logits with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class GrammarSpec:
    kind: Literal["json", "regex"]
    value: str  # "json": the schema as JSON text ("{}" or any object: a JSON value of that shape); "regex": the pattern
