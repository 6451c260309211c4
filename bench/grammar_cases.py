"""The grammars `niyama bench grammar --libraries` compares libraries on: eleven JSON schemas and two regexes.

Each comes with a text it accepts, what a constrained generation would
produce (the worker's JSON: one line, ", " and ": " between items,
engine/grammar.py). Walking the text's tokens through a library's matcher
times one mask per generated token without a model, and checks that the
library accepts a valid document. (The throughput run sends the 32 schemas
of `grammar_schemas.py` instead.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from niyama.engine.grammar import GrammarSpec


@dataclass(frozen=True)
class GrammarCase:
    name: str
    spec: GrammarSpec
    example: str  # a text the grammar accepts


def _json(name: str, schema: dict, example: object) -> GrammarCase:
    return GrammarCase(name, GrammarSpec("json", json.dumps(schema)), json.dumps(example))


PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0, "maximum": 150}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
ADDRESS = {
    "type": "object",
    "properties": {"street": {"type": "string"}, "city": {"type": "string"}, "zip": {"type": "string"}},
    "required": ["street", "city"],
}

CASES: tuple[GrammarCase, ...] = (
    _json("flat object", PERSON, {"name": "Ada", "age": 36}),
    _json(
        "nested objects",
        {
            "type": "object",
            "properties": {"person": PERSON, "home": ADDRESS, "work": ADDRESS},
            "required": ["person", "home"],
        },
        {"person": {"name": "Ada", "age": 36}, "home": {"street": "1 Main St", "city": "London"}},
    ),
    _json(
        "array of objects",
        {"type": "array", "items": PERSON, "minItems": 1, "maxItems": 4},
        [{"name": "Ada", "age": 36}, {"name": "Alan", "age": 41}],
    ),
    _json(
        "enums",
        {
            "type": "object",
            "properties": {
                "color": {"enum": ["red", "green", "blue"]},
                "size": {"type": "string", "enum": ["S", "M", "L", "XL"]},
                "tag": {"const": "v1"},
            },
            "required": ["color", "size", "tag"],
        },
        {"color": "green", "size": "XL", "tag": "v1"},
    ),
    _json(
        "bounded numbers",
        {
            "type": "object",
            "properties": {
                "temperature": {"type": "number", "minimum": -50, "maximum": 60},
                "humidity": {"type": "integer", "minimum": 0, "maximum": 100},
                "pressure": {"type": "number", "exclusiveMinimum": 0},
            },
            "required": ["temperature", "humidity", "pressure"],
        },
        {"temperature": 21.5, "humidity": 40, "pressure": 1013.25},
    ),
    _json(
        "optional fields",
        {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "nickname": {"type": "string"},
                "email": {"type": "string"},
                "verified": {"type": "boolean"},
            },
            "required": ["id"],
        },
        {"id": 7, "verified": True},
    ),
    _json(
        "string formats",
        {
            "type": "object",
            "properties": {
                "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
                "title": {"type": "string", "minLength": 3, "maxLength": 20},
                "created": {"type": "string", "format": "date"},
            },
            "required": ["code", "title", "created"],
        },
        {"code": "ABC-1234", "title": "Quarterly", "created": "2024-05-01"},
    ),
    _json(
        "anyOf and null",
        {
            "type": "object",
            "properties": {
                "value": {"anyOf": [{"type": "integer"}, {"type": "string"}, {"type": "null"}]},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["value", "tags"],
        },
        {"value": None, "tags": ["a", "b"]},
    ),
    _json(
        "definitions and refs",
        {
            "$defs": {
                "point": {
                    "type": "object",
                    "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                    "required": ["x", "y"],
                }
            },
            "type": "object",
            "properties": {"start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"}},
            "required": ["start", "end"],
        },
        {"start": {"x": 0, "y": 1.5}, "end": {"x": 2, "y": -3}},
    ),
    _json(
        "tool call",
        {
            "type": "object",
            "properties": {
                "name": {"const": "get_weather"},
                "arguments": {
                    "type": "object",
                    "properties": {
                        "location": {"type": "string"},
                        "unit": {"enum": ["celsius", "fahrenheit"]},
                        "days": {"type": "integer", "minimum": 1, "maximum": 14},
                    },
                    "required": ["location", "unit"],
                },
            },
            "required": ["name", "arguments"],
        },
        {"name": "get_weather", "arguments": {"location": "Paris", "unit": "celsius", "days": 3}},
    ),
    _json(
        "recursive tree",
        {
            "$defs": {
                "node": {
                    "type": "object",
                    "properties": {
                        "label": {"type": "string"},
                        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                    },
                    "required": ["label"],
                }
            },
            "$ref": "#/$defs/node",
        },
        {"label": "root", "children": [{"label": "leaf"}]},
    ),
    GrammarCase("regex: date", GrammarSpec("regex", r"\d{4}-\d{2}-\d{2}"), "2024-05-01"),
    GrammarCase(
        "regex: email",
        GrammarSpec("regex", r"[a-z0-9._]{1,20}@[a-z0-9]{1,12}\.(com|org|net)"),
        "ada.lovelace@example.org",
    ),
)
