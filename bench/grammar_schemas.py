"""The 32 JSON schemas `niyama bench grammar` sends, one per request; the structured-output tests send them too.

Each is realistic in shape: nested objects, arrays, enums, bounded numbers,
optional fields, `$defs` references, patterns, `anyOf`, nulls. Free-text
strings and arrays carry `maxLength`/`maxItems`, integers bounds, and decimals
`multipleOf` (cents, a tenth of a degree), as a real schema would: a JSON
number or string has no length limit of its own, and a 135M-parameter model
that samples digit after digit (seen: a 600-token "score") never finishes.
"""

from __future__ import annotations

NAME = {"type": "string", "minLength": 1, "maxLength": 40}
TEXT = {"type": "string", "maxLength": 80}
PROBABILITY = {"type": "number", "minimum": 0, "maximum": 1, "multipleOf": 0.01}
LENGTH = {"type": "number", "minimum": 0, "maximum": 100, "multipleOf": 0.1}
EMAIL = {"type": "string", "pattern": "^[a-z0-9.]{1,20}@[a-z0-9]{1,15}\\.(com|org|net)$"}


def obj(properties: dict, required: list[str] | None = None, **extra: object) -> dict:
    """An object schema; every property required unless ``required`` says which."""
    needed = list(properties) if required is None else required
    return {"type": "object", "properties": properties, "required": needed, "additionalProperties": False, **extra}


def array(items: dict, max_items: int = 4, min_items: int = 0) -> dict:
    return {"type": "array", "items": items, "minItems": min_items, "maxItems": max_items}


ADDRESS = obj({"street": NAME, "city": NAME, "postcode": {"type": "string", "pattern": "^[0-9]{5}$"}})
PERSON = obj({"name": NAME, "age": {"type": "integer", "minimum": 0, "maximum": 120}})

SCHEMAS: dict[str, dict] = {
    "person": PERSON,
    "person_with_optional_email": obj(
        {"name": NAME, "email": EMAIL, "age": {"type": "integer", "minimum": 0, "maximum": 120}}, ["name"]
    ),
    "address": ADDRESS,
    "customer": obj({"person": PERSON, "address": ADDRESS, "vip": {"type": "boolean"}}),
    "city_weather": obj(
        {
            "city": NAME,
            "temperature": {"type": "number", "minimum": -60, "maximum": 60, "multipleOf": 0.1},
            "unit": {"enum": ["celsius", "fahrenheit"]},
        }
    ),
    "forecast": obj(
        {
            "city": NAME,
            "days": array(
                obj(
                    {
                        "day": {"enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
                        "rain_mm": {"type": "number", "minimum": 0, "maximum": 500, "multipleOf": 0.1},
                    }
                ),
                5,
                1,
            ),
        }
    ),  # fmt: skip
    "todo_list": obj({"title": NAME, "items": array(obj({"task": TEXT, "done": {"type": "boolean"}}), 5)}),
    "tags": obj({"tags": array({"type": "string", "maxLength": 15}, 6, 1)}),
    "rgb_color": obj({c: {"type": "integer", "minimum": 0, "maximum": 255} for c in ("r", "g", "b")}),
    "point_3d": obj({axis: {"type": "number", "multipleOf": 0.001} for axis in ("x", "y", "z")}),
    "book": obj(
        {
            "title": NAME,
            "author": NAME,
            "year": {"type": "integer", "minimum": 1450, "maximum": 2030},
            "isbn": {"type": "string", "pattern": "^97[89][0-9]{10}$"},
            "genres": array({"enum": ["fiction", "history", "science", "poetry", "travel"]}, 3),
        },
        ["title", "author", "year"],
    ),  # fmt: skip
    "movie_review": obj(
        {
            "movie": NAME,
            "stars": {"type": "integer", "minimum": 1, "maximum": 5},
            "summary": TEXT,
            "recommended": {"type": "boolean"},
        }
    ),
    "product": obj(
        {
            "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
            "name": NAME,
            "price": {"type": "number", "exclusiveMinimum": 0, "maximum": 10000, "multipleOf": 0.01},
            "currency": {"enum": ["EUR", "USD", "GBP", "INR"]},
            "in_stock": {"type": "boolean"},
        },
        ["sku", "name", "price"],
    ),  # fmt: skip
    "order": obj(
        {
            "order_id": {"type": "integer", "minimum": 1, "maximum": 99999999},
            "customer": obj({"name": NAME, "email": EMAIL}),
            "lines": array(obj({"sku": NAME, "quantity": {"type": "integer", "minimum": 1, "maximum": 99}}), 3, 1),
            "status": {"enum": ["pending", "paid", "shipped", "cancelled"]},
        }
    ),
    "event": obj(
        {
            "name": NAME,
            "date": {"type": "string", "pattern": "^20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"},
            "attendees": {"type": "integer", "minimum": 0, "maximum": 100000},
            "online": {"type": "boolean"},
        }
    ),
    "recipe": obj(
        {
            "dish": NAME,
            "servings": {"type": "integer", "minimum": 1, "maximum": 12},
            "ingredients": array(
                obj({"item": NAME, "grams": {"type": "number", "minimum": 0, "maximum": 5000, "multipleOf": 0.5}}), 5, 1
            ),
            "vegetarian": {"type": "boolean"},
        }
    ),
    "http_request": obj(
        {
            "method": {"enum": ["GET", "POST", "PUT", "DELETE"]},
            "path": {"type": "string", "pattern": "^/[a-z0-9/_-]{0,30}$"},
            "headers": array(obj({"name": NAME, "value": TEXT}), 3),
            "body": {"anyOf": [TEXT, {"type": "null"}]},
        },
        ["method", "path"],
    ),  # fmt: skip
    "sentiment": obj(
        {
            "label": {"enum": ["positive", "neutral", "negative"]},
            "score": PROBABILITY,
        }
    ),  # fmt: skip
    "entities": obj({"entities": array(obj({"text": NAME, "type": {"enum": ["PERSON", "ORG", "PLACE", "DATE"]}}))}),
    "yes_no_answer": obj({"answer": {"enum": ["yes", "no"]}, "confidence": PROBABILITY}),  # fmt: skip
    "classification_with_const": obj(
        {
            "schema_version": {"const": 2},
            "category": {"enum": ["bug", "feature"]},
            "priority": {"type": "integer", "minimum": 1, "maximum": 4},
        }
    ),  # fmt: skip
    "nullable_fields": obj(
        {
            "name": NAME,
            "nickname": {"type": ["string", "null"], "maxLength": 20},
            "manager": {"anyOf": [PERSON, {"type": "null"}]},
        }
    ),  # fmt: skip
    "matrix_2x2": obj({"rows": array(array({"type": "integer", "minimum": -9, "maximum": 9}, 2, 2), 2, 2)}),
    "coordinates_list": obj(
        {
            "points": array(
                obj(
                    {
                        "lat": {"type": "number", "minimum": -90, "maximum": 90, "multipleOf": 0.0001},
                        "lon": {"type": "number", "minimum": -180, "maximum": 180, "multipleOf": 0.0001},
                    }
                ),
                3,
                1,
            )
        }
    ),
    "company_tree": {
        "$defs": {"employee": obj({"name": NAME, "title": {"enum": ["engineer", "manager", "designer", "sales"]}})},
        **obj({"company": NAME, "ceo": {"$ref": "#/$defs/employee"}, "staff": array({"$ref": "#/$defs/employee"}, 3)}),
    },  # fmt: skip
    "calendar_slot": obj(
        {
            "start_hour": {"type": "integer", "minimum": 0, "maximum": 23},
            "end_hour": {"type": "integer", "minimum": 0, "maximum": 23},
            "room": {"enum": ["A", "B", "C"]},
            "note": TEXT,
        },
        ["start_hour", "end_hour"],
    ),
    "bank_transfer": obj(
        {
            "iban": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}[A-Z0-9]{8,16}$"},
            "amount": {"type": "number", "minimum": 0.01, "maximum": 1000000, "multipleOf": 0.01},
            "currency": {"enum": ["EUR", "USD"]},
            "reference": {"type": "string", "maxLength": 30},
        }
    ),
    "survey_answers": obj(
        {"answers": array({"type": "integer", "minimum": 1, "maximum": 5}, 6, 3), "comment": TEXT}, ["answers"]
    ),  # fmt: skip
    "shape_union": obj(
        {
            "shape": {
                "anyOf": [
                    obj({"kind": {"const": "circle"}, "radius": LENGTH}),
                    obj(
                        {
                            "kind": {"const": "rect"},
                            "width": LENGTH,
                            "height": LENGTH,
                        }
                    ),
                ]
            }
        }
    ),  # fmt: skip
    "server_config": obj(
        {
            "host": {"type": "string", "pattern": "^[a-z0-9.-]{1,30}$"},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "tls": {"type": "boolean"},
            "workers": {"type": "integer", "minimum": 1, "maximum": 64},
            "log_level": {"enum": ["debug", "info", "warning", "error"]},
        },
        ["host", "port"],
    ),
    "open_object_with_extras": {
        "type": "object",
        "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 999999}},
        "required": ["id"],
        "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 9},
        "maxProperties": 3,
    },  # fmt: skip
    "nested_three_levels": obj(
        {
            "country": obj(
                {
                    "name": NAME,
                    "region": obj(
                        {
                            "name": NAME,
                            "city": obj(
                                {"name": NAME, "population": {"type": "integer", "minimum": 0, "maximum": 40000000}}
                            ),
                        }
                    ),
                }
            )
        }
    ),  # fmt: skip
}
