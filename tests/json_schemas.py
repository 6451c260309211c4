"""The JSON schemas the structured-output tests send: the grammar benchmark's (bench code cannot import tests)."""

from niyama.bench.grammar_schemas import SCHEMAS

__all__ = ["SCHEMAS"]
