"""/api-doc/openapi.json and /docs: the API as it really is, QoS extensions included.

Request schemas come from the pydantic models the routes parse with, so the
description cannot drift from the code; answers are described by example
shapes. /docs is a Swagger UI page over it whose assets the server serves
itself (a packaged copy, `static/swagger-ui/`), so it works on an air-gapped
host; the validator badge, Swagger UI's one outside call, is switched off.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from .qos_headers import TARGET_HEADERS, TIER_HEADER
from .schemas import ChatRequest, CompatGenerateRequest, CompletionRequest, GenerateRequest
from .settings import ROUTER_VERSION
from .vertex import VertexRequest

REF = "#/components/schemas/{model}"
ERRORS = {
    "401": "a valid API key is required (`unauthorized`)",
    "403": "this API key may not use the requested QoS tier (`forbidden`)",
    "422": "input validation error, unknown QoS tier, or unsupported feature (`validation`)",
    "413": "the body is over --payload-limit (`payload_too_large`)",
    "424": "the generation failed (`generation`)",
    "429": "over --max-concurrent-requests or the API key's limit (`overloaded`); see Retry-After",
}

QOS_PARAMETERS = [
    {"name": TIER_HEADER, "in": "header", "required": False, "schema": {"type": "string"},
     "description": "QoS tier; default: the API key's default tier, else the tier file's default"},
] + [
    {"name": header, "in": "header", "required": False, "schema": {"type": "number", "exclusiveMinimum": 0},
     "description": f"tighter {field.upper()} target in milliseconds (may only tighten the tier's)"}
    for field, header in TARGET_HEADERS.items()
]  # fmt: skip


def _schemas(models: list[type[BaseModel]]) -> dict:
    schemas: dict = {"ErrorResponse": {
        "type": "object", "required": ["error", "error_type"],
        "properties": {"error": {"type": "string"}, "error_type": {"type": "string"}},
    }}  # fmt: skip
    for model in models:
        schema = model.model_json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def _post(summary: str, body: type[BaseModel], answer: str, stream: bool) -> dict:
    content = {"application/json": {"schema": {"type": "object"}, "example": answer}}
    if stream:
        content["text/event-stream"] = {"schema": {"type": "string"}, "description": "one `data: <json>` per token"}
    responses = {"200": {"description": answer, "content": content}}
    for status, description in ERRORS.items():
        responses[status] = {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}},
        }
    return {"post": {
        "summary": summary, "parameters": QOS_PARAMETERS,
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": {"$ref": REF.format(model=body.__name__)}}}},
        "responses": responses,
    }}  # fmt: skip


def _get(summary: str, content_type: str = "application/json") -> dict:
    return {"get": {"summary": summary, "responses": {"200": {"description": summary, "content": {content_type: {}}}}}}


def openapi_document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Niyama: TGI-compatible text generation with QoS tiers",
            "version": ROUTER_VERSION,
            "license": {"name": "Apache-2.0"},
            "description": (
                "Text Generation Inference's HTTP API with per-request QoS: pick a tier with the `x-qos-tier` "
                "header (or `qos.tier` in the body) and tighten its latency targets with `x-slo-*-ms` headers "
                "(or `qos.*_ms`). `parameters.ignore_eos` is an extension. Differences from TGI: docs/http_api.md."
            ),
        },
        "paths": {
            "/": _post(
                "generate, or stream when `stream` is true (api-inference's shape)",
                CompatGenerateRequest,
                "[GenerateResponse]",
                True,
            ),
            "/generate": _post("generate text", GenerateRequest, "GenerateResponse", False),
            "/generate_stream": _post("stream tokens as server-sent events", GenerateRequest, "StreamResponse", True),
            "/v1/chat/completions": _post("OpenAI chat completions", ChatRequest, "ChatCompletion", True),
            "/v1/completions": _post("OpenAI completions", CompletionRequest, "Completion", True),
            "/tokenize": _post("tokenize an input", GenerateRequest, "[{id, text, start, stop}]", False),
            "/chat_tokenize": _post(
                "apply the chat template and tokenize", ChatRequest, "{tokenize_response, templated_text}", False
            ),
            "/vertex": _post(
                "Vertex AI: `{instances: [{inputs, parameters} | chat request]}` -> `{predictions: [text]}`",
                VertexRequest,
                "VertexResponse",
                False,
            ),
            "/invocations": _post(
                "SageMaker: any of the bodies above, dispatched by shape",
                CompatGenerateRequest,
                "as the matching route",
                True,
            ),
            "/health": _get("liveness: 200 while the engine loop runs, 503 `healthcheck` otherwise"),
            "/ping": _get("same as /health"),
            "/ready": _get("readiness: 200 when a new request would be admitted, 503 `unavailable` otherwise"),
            "/info": _get("model and router limits"),
            "/metrics": _get("Prometheus metrics: TGI's series and per-tier QoS series", "text/plain"),
            "/v1/models": _get("the served model, OpenAI's shape"),
        },  # fmt: skip
        "components": {"schemas": _schemas(
            [CompatGenerateRequest, GenerateRequest, ChatRequest, CompletionRequest, VertexRequest]
        )},
    }


ASSETS = Path(__file__).parent / "static" / "swagger-ui"  # Swagger UI 5.35.0, Apache-2.0 (its README.md)
ASSETS_PATH = "/docs/assets"
SWAGGER_PAGE = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Niyama API</title>
<link rel="icon" type="image/png" href="{ASSETS_PATH}/favicon-32x32.png">
<link rel="stylesheet" href="{ASSETS_PATH}/swagger-ui.css"></head>
<body><div id="ui"><p>The API description is at <a href="/api-doc/openapi.json">/api-doc/openapi.json</a>.</p></div>
<script src="{ASSETS_PATH}/swagger-ui-bundle.js"></script>
<script>
window.onload = () => SwaggerUIBundle({{url: "/api-doc/openapi.json", dom_id: "#ui", validatorUrl: null}});
</script>
</body></html>
"""
