"""Keys bound to tiers, limits with clear errors, liveness vs readiness: exact statuses and envelopes."""

import logging
import time

import pytest
import requests
from harden_support import HeldStream, PacedWorker, assert_envelope, connect, read_all, settled, wait_until
from router_server import tiny_parts, tiny_server

from niyama.qos.config import parse_tier_config
from niyama.qos.errors import QosConfigError

ADMIN = "admin-7f3a9c2e-secret"
TEAM_A = "team-a-51d0be44-secret"
TEAM_B = "team-b-c1e9a870-secret"
TIERS = parse_tier_config(
    {
        "default": "interactive",
        "tiers": [
            {"name": "interactive", "kind": "interactive", "ttft": "2s", "tbt": "200ms", "importance": 2},
            {"name": "batch", "kind": "batch", "ttlt": "1h", "importance": 1},
        ],
        "api_keys": [
            {"name": "team-a", "key": TEAM_A, "max_concurrent_requests": 1},
            {"name": "team-b", "key": TEAM_B, "tiers": ["batch"], "default_tier": "batch"},
        ],
    },
    "test",
)
SECRETS = (ADMIN, TEAM_A, TEAM_B)
NEAR_MISSES = (TEAM_A[:-1], TEAM_A + "x", TEAM_A.upper(), " " + TEAM_B[1:], ADMIN[::-1])
GENERATION_ROUTES = ("/generate", "/generate_stream", "/", "/v1/chat/completions", "/v1/completions", "/invocations")
BODY = {"inputs": "Hi", "prompt": "Hi", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
LONG = {"inputs": "Hello", "parameters": {"max_new_tokens": 400}}  # 8 s at 20 ms a step: held until closed


@pytest.fixture(scope="module")
def keyed():
    with tiny_server(
        tiers=TIERS, parts=tiny_parts(worker=PacedWorker), api_key=ADMIN, max_concurrent_requests_per_key=2
    ) as running:
        yield running


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def hold_stream(server, headers: dict[str, str]) -> HeldStream:
    return HeldStream(server.url, LONG, headers)


def test_without_a_valid_key_every_generation_route_is_401_in_the_envelope(keyed):
    for route in (*GENERATION_ROUTES, "/tokenize", "/chat_tokenize"):
        for headers in ({}, {"authorization": f"Basic {TEAM_A}"}, *(bearer(key) for key in NEAR_MISSES)):
            response = requests.post(keyed.url + route, json=BODY, headers=headers, timeout=30)
            message = assert_envelope(response, 401, "unauthorized")
            assert message == "a valid API key is required: send it as `Authorization: Bearer <key>`"
    for route in ("/health", "/ping", "/ready", "/info", "/metrics", "/v1/models"):
        assert requests.get(keyed.url + route, timeout=10).status_code == 200, route


def test_each_key_gets_its_tiers_and_its_default(keyed):
    ok = {"inputs": "Hi", "parameters": {"max_new_tokens": 1}}
    for key, tier, status in (
        (TEAM_A, None, "interactive"), (TEAM_A, "batch", "batch"), (TEAM_B, None, "batch"), (ADMIN, "batch", "batch"),
    ):  # fmt: skip
        headers = bearer(key) | ({"x-qos-tier": tier} if tier else {})
        response = requests.post(keyed.url + "/generate", json=ok, headers=headers, timeout=30)
        assert response.status_code == 200 and response.headers["x-qos-tier"] == status
    refused = requests.post(
        keyed.url + "/generate", json={**ok, "qos": {"tier": "interactive"}}, headers=bearer(TEAM_B), timeout=30
    )
    message = assert_envelope(refused, 403, "forbidden")
    assert message == "API key 'team-b' may not use QoS tier 'interactive'; allowed: batch"


def test_per_key_concurrency_refuses_only_the_tenant_over_its_limit(keyed):
    held = [hold_stream(keyed, bearer(TEAM_A))]  # team-a's own limit (tier file): 1
    try:
        over = requests.post(keyed.url + "/generate", json=BODY, headers=bearer(TEAM_A), timeout=30)
        assert assert_envelope(over, 429, "overloaded") == "API key 'team-a' is over its limit of 1 concurrent requests"
        assert over.headers["retry-after"] == "1"
        held += [hold_stream(keyed, bearer(TEAM_B)) for _ in range(2)]  # --max-concurrent-requests-per-key 2
        over = requests.post(keyed.url + "/generate_stream", json=BODY, headers=bearer(TEAM_B), timeout=30)
        assert assert_envelope(over, 429, "overloaded") == "API key 'team-b' is over its limit of 2 concurrent requests"
        assert over.headers["retry-after"] == "1"
        admin = requests.post(keyed.url + "/generate", json={"inputs": "Hi", "parameters": {"max_new_tokens": 1}},
                              headers=bearer(ADMIN), timeout=30)  # fmt: skip
        assert admin.status_code == 200  # the others' floods do not starve this key
    finally:
        for response in held:
            response.close()
    wait_until(lambda: settled(keyed))
    again = requests.post(keyed.url + "/generate", json={"inputs": "Hi", "parameters": {"max_new_tokens": 1}},
                          headers=bearer(TEAM_A), timeout=30)  # fmt: skip
    assert again.status_code == 200


def test_keys_never_appear_in_answers_metrics_or_logs(keyed, caplog):
    caplog.set_level(logging.DEBUG)
    seen, short = [], {"inputs": "Hi", "parameters": {"max_new_tokens": 1}}
    for key in (*SECRETS, *NEAR_MISSES):
        for route, extra in (("/generate", {}), ("/generate", {"x-qos-tier": "interactive"}), ("/tokenize", {})):
            response = requests.post(keyed.url + route, json=short, headers=bearer(key) | extra, timeout=30)
            seen += [response.text, str(response.headers)]
    held = hold_stream(keyed, bearer(TEAM_A))
    with held:
        seen.append(requests.post(keyed.url + "/generate", json=BODY, headers=bearer(TEAM_A), timeout=30).text)
    seen += [
        requests.get(keyed.url + route, timeout=10).text for route in ("/metrics", "/info", "/api-doc/openapi.json")
    ]
    seen += [repr(keyed.state.settings), repr(TIERS), repr(keyed.state.tiers.api_keys), caplog.text]
    assert any("team-a" in text for text in seen)  # the label is what names a key
    for text in seen:
        for key in (*SECRETS, *NEAR_MISSES):
            assert key.strip() not in text


def test_a_single_api_key_alone_guards_every_tier():
    solo = "solo-2b8e41f0-secret"
    with tiny_server(api_key=solo) as server:  # `--api-key`, no tier file keys
        body = {"inputs": "Hi", "parameters": {"max_new_tokens": 1}}
        for headers in ({}, bearer(solo[:-1]), bearer(TEAM_A)):
            refused = requests.post(server.url + "/generate", json=body, headers=headers, timeout=30)
            assert solo not in assert_envelope(refused, 401, "unauthorized")
        for tier in ("interactive", "batch"):
            ok = requests.post(
                server.url + "/generate", json=body, headers=bearer(solo) | {"x-qos-tier": tier}, timeout=30
            )
            assert ok.status_code == 200 and ok.headers["x-qos-tier"] == tier


def test_bodies_over_the_payload_limit_are_413_before_they_are_read():
    with tiny_server(payload_limit=1000) as server:
        declared = requests.post(server.url + "/generate", data=b"x" * 1001, timeout=30)
        assert assert_envelope(declared, 413, "payload_too_large") == (
            "the request body is larger than the limit of 1000 bytes"
        )
        assert declared.headers["connection"] == "close"
        chunked = requests.post(server.url + "/v1/completions", data=(b"x" * 100 for _ in range(11)), timeout=30)
        assert_envelope(chunked, 413, "payload_too_large")
        prefix = b'{"parameters": {"max_new_tokens": 1}, "inputs": "'
        exact = prefix + b"a" * (1000 - len(prefix) - 2) + b'"}'
        assert len(exact) == 1000
        accepted = requests.post(server.url + "/generate", data=exact, timeout=30)
        assert accepted.status_code == 200, accepted.text


def test_heads_over_the_header_limit_are_431_and_closed():
    with tiny_server(max_header_bytes=4096) as server:
        under = requests.get(server.url + "/health", headers={"x-pad": "a" * 3500}, timeout=10)
        assert under.status_code == 200
        with connect(server.url) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 5000 + b"\r\n\r\n")
            answer = read_all(sock)  # the server closes the connection after its answer
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 431 ") and b"content-type: application/json" in head
        assert body == b'{"error":"the request line and headers are larger than the limit of 4096 bytes",' \
                       b'"error_type":"headers_too_large"}'  # fmt: skip
        with connect(server.url) as sock:  # a head that never ends is cut off too
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            sent = 0
            try:
                while sent < 1_000_000:
                    sock.sendall(b"X-Pad: " + b"a" * 500 + b"\r\n")
                    sent += 509
                    time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert sent < 100_000  # refused long before the megabyte
        assert requests.get(server.url + "/health", timeout=10).status_code == 200


def test_liveness_stays_up_while_readiness_follows_admission():
    with tiny_server(parts=tiny_parts(worker=PacedWorker), max_concurrent_requests=1) as server:
        assert requests.get(server.url + "/ready", timeout=10).status_code == 200
        with hold_stream(server, {}):
            busy = requests.get(server.url + "/ready", timeout=10)
            assert assert_envelope(busy, 503, "unavailable") == ("not ready: 1 of 1 concurrent requests in flight")
            assert requests.get(server.url + "/health", timeout=10).status_code == 200
            assert requests.get(server.url + "/ping", timeout=10).status_code == 200
        wait_until(lambda: requests.get(server.url + "/ready", timeout=10).status_code == 200)
        loop = server.state.engine.replicas[0].engine._task.get_loop()
        loop.call_soon_threadsafe(server.app.state.begin_shutdown)
        wait_until(lambda: not server.state.engine.accepting)
        draining = requests.get(server.url + "/ready", timeout=10)
        assert assert_envelope(draining, 503, "unavailable") == "not ready: the server is shutting down"
        assert requests.get(server.url + "/health", timeout=10).status_code == 200
        refused = requests.post(server.url + "/generate", json={"inputs": "Hi"}, timeout=10)
        assert_envelope(refused, 503, "unavailable")


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "8"])
def test_a_keys_own_concurrency_limit_must_be_a_positive_integer(limit):
    tiers = [{"name": "interactive", "kind": "interactive", "ttft": "2s", "tbt": "200ms"}]
    key = {"name": "team-a", "key": TEAM_A, "max_concurrent_requests": limit}
    with pytest.raises(QosConfigError) as error:
        parse_tier_config({"tiers": tiers, "api_keys": [key]}, "tiers.toml")
    assert str(error.value) == (
        f"tiers.toml: api key 'team-a': field 'max_concurrent_requests': expected an integer >= 1, got {limit!r}"
    )
    assert TEAM_A not in str(error.value)
