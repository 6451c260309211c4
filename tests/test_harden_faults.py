"""Faults: clients leaving at any point, injected step failures, KV exhaustion, a client that stops reading."""

import json
import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import torch
from harden_support import PacedWorker, assert_envelope, connect, metric, read_all, settled, wait_until
from router_server import VOCAB, real_tokenizer, tiny_parts, tiny_server
from support import reference_greedy, tiny_llama

from niyama.bench.sse import json_events
from niyama.engine.faults import FaultyWorker


def http_post(route: str, body: dict) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"POST {route} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n"
    )
    return head.encode() + b"\r\n" + payload


def leave_at(url: str, request: bytes, where: str, rng: random.Random) -> None:
    """Send ``request`` and hang up at ``where``: mid-head, mid-body, before any answer, or mid-answer."""
    with connect(url) as sock:
        if where == "head":
            sock.sendall(request[: rng.randrange(1, request.index(b"\r\n\r\n"))])
        elif where == "body":
            sock.sendall(request[: rng.randrange(request.index(b"\r\n\r\n") + 4, len(request))])
        elif where == "waiting":
            sock.sendall(request)
            time.sleep(rng.uniform(0.0, 0.3))
        else:
            sock.sendall(request)
            wanted, received = rng.randrange(1, 4000), 0
            while received < wanted and (chunk := sock.recv(256)):
                received += len(chunk)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset: abrupt


def test_clients_leaving_at_random_points_free_every_block_and_permit():
    rng = random.Random(7)
    with tiny_server(parts=tiny_parts(worker=PacedWorker)) as server:
        start = server.state.engine.stats()
        assert start.free_blocks == start.total_blocks
        long = {"max_new_tokens": 300, "details": True}
        streams = [
            http_post("/generate_stream", {"inputs": "Hello there", "parameters": long}),
            http_post(
                "/v1/chat/completions",
                {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 300, "stream": True},
            ),
        ]
        answers = [  # answered only at their end: hung up on while they compute
            http_post("/generate", {"inputs": "Hello there", "parameters": long}),
            http_post("/v1/completions", {"prompt": ["a", "b", "c"], "max_tokens": 300}),
        ]
        cases = [(rng.choice(streams), rng.choice(["head", "body", "waiting", "reading"])) for _ in range(16)]
        cases += [(rng.choice(answers), rng.choice(["head", "body", "waiting"])) for _ in range(16)]
        rng.shuffle(cases)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda case: leave_at(server.url, *case, random.Random(rng.random())), cases))
        worker = server.state.engine.replicas[0].parts.worker
        runner = worker.worker
        wait_until(lambda: settled(server) and not runner.sequences)  # the runner drops aborted sequences between steps
        assert server.state.engine.stats().free_blocks == start.free_blocks
        assert metric(server, 'niyama_tier_requests_total{outcome="cancelled",tier="interactive"}') >= 8
        assert metric(server, 'tgi_request_failure{err="client_closed"}') >= 1  # left mid-body
        assert metric(server, 'tgi_request_failure{err="internal"}', 0.0) == 0
        ok = requests.post(server.url + "/generate", json={"inputs": "Hi", "parameters": {"max_new_tokens": 3}})
        assert ok.status_code == 200


def test_an_injected_step_failure_fails_that_steps_requests_and_the_next_ones_succeed():
    with tiny_server(parts=tiny_parts(worker=lambda runner: FaultyWorker(PacedWorker(runner)))) as server:
        worker = server.state.engine.replicas[0].parts.worker
        body = {"inputs": "Hello", "parameters": {"max_new_tokens": 400}}
        streams = [requests.post(server.url + "/generate_stream", json=body, stream=True, timeout=30) for _ in range(2)]
        lines = [response.iter_lines() for response in streams]
        for line in lines:
            next(line)  # both are decoding: every later step computes both
        worker.fail_next(1)
        ends = [json_events(line)[-1] for line in lines]
        assert ends == [{
            "error": "Request failed during generation: InjectedFault: injected fault in step "
            f"{worker._steps} (2 requests)",
            "error_type": "generation",
        }] * 2  # fmt: skip
        assert worker.injected == 1
        after = requests.post(
            server.url + "/generate_stream", json={"inputs": "Hi", "parameters": {"max_new_tokens": 5}}
        )
        assert json_events(after.iter_lines())[-1]["generated_text"] is not None
        again = requests.post(server.url + "/generate", json={"inputs": "Hi", "parameters": {"max_new_tokens": 5}})
        assert again.status_code == 200
        wait_until(lambda: settled(server))
        assert metric(server, 'tgi_batch_inference_failure{method="decode"}') == 1
        assert requests.get(server.url + "/health", timeout=10).status_code == 200


def test_a_random_share_of_failing_steps_loses_no_request():
    with tiny_server(parts=tiny_parts(worker=lambda runner: FaultyWorker(runner, rate=0.2, seed=3))) as server:
        body = {"inputs": "Hello", "parameters": {"max_new_tokens": 8}}
        with ThreadPoolExecutor(6) as pool:
            answers = list(
                pool.map(lambda _: requests.post(server.url + "/generate", json=body, timeout=60), range(30))
            )
        statuses = sorted(answer.status_code for answer in answers)
        assert set(statuses) == {200, 424}  # some failed, some did not; nothing else
        for answer in answers:
            if answer.status_code == 424:
                assert "InjectedFault" in answer.json()["error"]
        wait_until(lambda: settled(server))
        assert server.state.engine.replicas[0].parts.worker.injected >= 1


def test_kv_exhaustion_preempts_and_recomputes_token_identically_to_generate():
    model = tiny_llama(torch.float64, vocab_size=VOCAB, max_position_embeddings=1024)
    tokenizer = real_tokenizer()
    prompts = [f"Request {i}: " + "tell me a story " * (i % 3 + 1) for i in range(6)]
    new_tokens = [24 + 4 * i for i in range(6)]  # 6 requests of 30 to 60 tokens; the cache holds 160 tokens
    with tiny_server(parts=tiny_parts(kv_tokens=160, model=model), max_input_tokens=60, max_total_tokens=160) as server:

        def generate(i: int) -> list[int]:
            body = {"inputs": prompts[i], "parameters": {"max_new_tokens": new_tokens[i], "details": True}}
            answer = requests.post(server.url + "/generate", json=body, timeout=120)
            assert answer.status_code == 200, answer.text
            return [token["id"] for token in answer.json()["details"]["tokens"]]

        with ThreadPoolExecutor(6) as pool:
            outputs = list(pool.map(generate, range(6)))
        assert server.state.engine.stats().preempted_total > 0
        wait_until(lambda: settled(server))
    for i, output in enumerate(outputs):
        assert output == reference_greedy(model, tokenizer.encode(prompts[i]), new_tokens[i]), i


def test_a_client_that_stops_reading_is_cut_off_and_its_resources_freed():
    # 100 alternatives per token: about 6 kB an event, 5 MB in all, more than loopback's socket buffers take.
    with tiny_server(stream_send_timeout=1.0, max_top_n_tokens=100) as server:
        body = {"inputs": "Hello", "parameters": {"max_new_tokens": 900, "top_n_tokens": 100}}
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server's buffer fills
        host, port = server.url.removeprefix("http://").split(":")
        sock.connect((host, int(port)))
        with sock:
            sock.sendall(http_post("/generate_stream", body))
            wait_until(lambda: server.state.engine.in_flight == 1)
            wait_until(lambda: settled(server), timeout=30)  # aborted while the client still holds the socket
            assert metric(server, 'tgi_request_failure{err="client_stalled"}') == 1
            assert metric(server, 'niyama_tier_requests_total{outcome="cancelled",tier="interactive"}') == 1
            sock.settimeout(10)
            received = read_all(sock)  # what the server had buffered, then the end of the connection
        events = json_events(received.split(b"\n"))  # SSE fields only: HTTP's head and chunk sizes are ignored
        print(f"stalled client: {len(received)} bytes, {len(events)} events received; last index {events[-1]['index']}")
        assert events and events[-1]["index"] < 900 and events[-1]["generated_text"] is None
        ok = requests.post(server.url + "/generate", json={"inputs": "Hi", "parameters": {"max_new_tokens": 2}})
        assert ok.status_code == 200


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_refused_after_part_of_it_started_holds_nothing(stream):
    # The cache holds 160 tokens: the first prompt fits with its 150 new tokens, the second cannot ever.
    with tiny_server(parts=tiny_parts(kv_tokens=160, worker=PacedWorker)) as server:
        prompts = ["Hi", "Request: " + "tell me a story " * 5]
        body = {"prompt": prompts, "max_tokens": 150, "stream": stream}
        refused = requests.post(server.url + "/v1/completions", json=body, timeout=30)
        message = assert_envelope(refused, 422, "validation")
        assert "but the cache holds 160" in message
        assert settled(server)  # at once: the first prompt's generation was aborted, its permit given back
