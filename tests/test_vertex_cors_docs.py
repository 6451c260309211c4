"""`niyama serve` started from TGI's environment variables alone, as a container platform starts it.

One server for the module: `python -m niyama.router.cli serve` with no flag
at all, on a tiny random Llama saved to a local folder (the real SmolLM2
tokenizer, so text is real text), configured only by MODEL_ID, PORT,
HOSTNAME, JSON_OUTPUT, CORS_ALLOW_ORIGIN, AIP_PREDICT_ROUTE, AIP_HEALTH_ROUTE
and a few limits. Against it: the JSON log lines, CORS preflights, /vertex
as TGI answers it, and /docs with every asset served by the server itself.
"""

from __future__ import annotations

import json
import os
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests
import torch
from router_server import VOCAB
from support import tiny_llama

from niyama.bench.servers import free_port, launch, stop, wait_healthy
from niyama.router.launcher_flags import env_names
from niyama.router.serve import parser

ORIGIN = "https://app.example"
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from transformers import AutoTokenizer

    from niyama.worker.loading import resolve_checkpoint

    folder = tmp_path_factory.mktemp("tiny-model")
    tiny_llama(torch.float32, vocab_size=VOCAB, max_position_embeddings=1024).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_checkpoint(None)[1]).save_pretrained(folder)
    ours = {name for action in parser()._actions for name in env_names(action)}
    env = {name: value for name, value in os.environ.items() if name not in ours}  # only what the test sets
    port = free_port()
    env.update({
        "MODEL_ID": str(folder), "PORT": str(port), "HOSTNAME": "127.0.0.1", "JSON_OUTPUT": "true",
        "CORS_ALLOW_ORIGIN": f"{ORIGIN},https://other.example", "AIP_PREDICT_ROUTE": "/predict",
        "AIP_HEALTH_ROUTE": "/healthz", "MAX_INPUT_TOKENS": "500", "MAX_TOTAL_TOKENS": "1000",
        "MAX_BATCH_TOTAL_TOKENS": "8192", "LATENCY_MODEL": "a100-llama3-8b", "GRACEFUL_TERMINATION_TIMEOUT": "0",
        "OMP_NUM_THREADS": "1",
    })  # fmt: skip
    log = tmp_path_factory.mktemp("logs") / "serve.log"
    process = launch([sys.executable, "-m", "niyama.router.cli", "serve"], log, env)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(process, url, timeout=180, log=log)
    try:
        yield url, folder, log
    finally:
        stop(process)


@pytest.fixture(scope="module")
def url(served) -> str:
    return served[0]


def post(url: str, path: str, body: dict) -> requests.Response:
    return requests.post(url + path, json=body, timeout=60)


def test_the_server_started_from_the_environment_alone(served):
    url, folder, _ = served
    info = requests.get(url + "/info", timeout=10).json()
    assert (info["model_id"], info["max_input_tokens"], info["max_total_tokens"]) == (str(folder), 500, 1000)
    assert info["niyama_config"]["cache"]["kv_tokens"] == 8192


def test_a_preflight_from_an_allowed_origin_is_answered_as_tgis_cors_layer(url):
    preflight = requests.options(url + "/generate", timeout=10, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type",
    })  # fmt: skip
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert preflight.headers["access-control-allow-methods"] == "GET, POST"
    assert "content-type" in preflight.headers["access-control-allow-headers"].lower().split(", ")
    answer = requests.get(url + "/info", headers={"Origin": ORIGIN}, timeout=10)
    assert answer.headers["access-control-allow-origin"] == ORIGIN


def test_other_origins_get_no_cors_grant(url):
    preflight = requests.options(url + "/generate", timeout=10, headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
    })  # fmt: skip
    assert preflight.status_code == 400 and "access-control-allow-origin" not in preflight.headers
    answer = requests.get(url + "/info", headers={"Origin": "https://evil.example"}, timeout=10)
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers


def test_without_cors_allow_origin_every_origin_is_allowed_as_in_tgi():
    from router_server import tiny_server
    from starlette.testclient import TestClient

    client = TestClient(tiny_server().app)  # no lifespan: the CORS layer answers before any route
    preflight = client.options("/generate", headers={"Origin": "https://any.example",
                                                     "Access-Control-Request-Method": "POST"})  # fmt: skip
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "*"


def test_vertex_samples_each_instance_with_only_its_max_new_tokens_and_seed(url):
    generate = {"inputs": "Hello", "parameters": {"max_new_tokens": 6, "seed": 11, "temperature": 0.01,
                                                  "stop": ["a"], "details": True}}  # fmt: skip
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "seed": 3}
    answer = post(url, "/vertex", {"instances": [generate, chat]})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    sampled = post(url, "/generate", {"inputs": "Hello", "parameters": {"do_sample": True, "max_new_tokens": 6,
                                                                        "seed": 11}}).json()  # fmt: skip
    chatted = post(url, "/v1/chat/completions", chat).json()
    assert answer.json() == {"predictions": [sampled["generated_text"], chatted["choices"][0]["message"]["content"]]}


def test_vertex_errors_are_tgis(url):
    empty = post(url, "/vertex", {"instances": []})
    assert (empty.status_code, empty.json()) == (422, {"error": "Input validation error",
                                                       "error_type": "Input validation error"})  # fmt: skip
    too_long = post(url, "/vertex", {"instances": [{"inputs": "Hi"}, {"inputs": "Hello " * 600}]})
    assert too_long.status_code == 422 and too_long.json()["error_type"] == "validation"  # TGI: 500, see vertex.py
    assert "must have less than 500 tokens" in too_long.json()["error"]
    neither = post(url, "/vertex", {"instances": [{"prompt": "Hello"}]})
    assert neither.status_code == 422 and neither.json()["error_type"] == "validation"


def test_vertex_is_also_served_at_the_aip_routes(url):
    body = {"instances": [{"inputs": "Hello", "parameters": {"max_new_tokens": 3, "seed": 5}}]}
    assert post(url, "/predict", body).json() == post(url, "/vertex", body).json()
    assert requests.get(url + "/healthz", timeout=10).status_code == 200


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def test_docs_loads_every_asset_from_the_server_itself(url):
    page = requests.get(url + "/docs", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    links = Links()
    links.feed(page.text)
    assert len(links.urls) == 4 and all(link.startswith("/") for link in links.urls)  # nothing from elsewhere
    assert '"/api-doc/openapi.json"' in page.text and "validatorUrl: null" in page.text
    for link in links.urls:
        answer = requests.get(url + link, timeout=10)
        assert answer.status_code == 200, link
        assert answer.headers["content-type"].startswith(CONTENT_TYPES[Path(link).suffix]), link
    bundle = requests.get(url + "/docs/assets/swagger-ui-bundle.js", timeout=10).text
    assert "SwaggerUIBundle" in bundle and len(bundle) > 1_000_000
    spec = requests.get(url + "/api-doc/openapi.json", timeout=10).json()
    assert spec["openapi"].startswith("3.1") and "/vertex" in spec["paths"]


def test_every_log_line_is_one_json_object_with_tgis_fields(served):
    _, _, log = served
    requests.get(served[0] + "/health", timeout=10)
    lines = log.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert all({"timestamp", "level", "message", "target"} <= set(record) for record in records)
    targets = {record["target"] for record in records}
    assert {"niyama.serve", "uvicorn.error", "uvicorn.access"} <= targets
    loaded = next(r for r in records if r["target"] == "niyama.worker")  # the worker's lines, relayed
    assert loaded["level"] == "INFO" and re.fullmatch(r"worker \d+: loaded .+ in [\d.]+ s", loaded["message"])
    ready = next(r for r in records if r["message"].startswith("ready in"))
    assert ready["level"] == "INFO" and ready["timestamp"].endswith("Z")
