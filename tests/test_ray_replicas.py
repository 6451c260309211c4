"""Two CPU replicas of the default model on a local Ray cluster, behind one HTTP server.

What a user of `niyama serve --replicas 2` relies on: the same tokens as the
single-replica server, both replicas taking requests, and a replica whose
actor is killed mid-stream not taking the service down (its streamed request
ends with a clear error, later requests succeed, the replica comes back),
and /metrics adding the replicas up per tier beside each replica's own series.
The Ray cluster (2 CPUs, no dashboard) starts once for this module and is
shut down after it; the two actors load the model once each.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families
from router_server import ThreadedServer
from support import BackgroundStream, reference_greedy

from niyama.engine.launch import LocalWorkers, ReplicaRecipe, launch_all
from niyama.engine.protocol import WorkerConfig
from niyama.engine.ray_transport import RayWorkers
from niyama.engine.replicas import ReplicaSet
from niyama.qos.config import builtin_tier_config
from niyama.qos.policy import policy_config
from niyama.qos.routing import make_routing
from niyama.router.app import create_app
from niyama.router.settings import ServerSettings
from niyama.router.tokenizer import TextTokenizer

pytestmark = pytest.mark.slow

KV_TOKENS = 4096
TIERS = builtin_tier_config("default")
PROMPTS = [
    "The capital of France is",
    "Write a haiku about the sea:",
    "def fibonacci(n):",
    "Three facts about owls:",
    "Once upon a time, in a small village,",
    "The best way to learn a language is",
]


@pytest.fixture(scope="module")
def ray_cluster():
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(
            num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
            object_store_memory=128 * 1024**2,
        )  # fmt: skip
        yield
        ray.shutdown()


def settings(loaded) -> ServerSettings:
    return ServerSettings(model_id=loaded.model_id, max_input_tokens=1024, max_total_tokens=2048)


RECIPE = ReplicaRecipe(TIERS, policy_config("niyama"), latency_profile="a100-llama3-8b")


def served(workers, count: int, default_model) -> ThreadedServer:
    parts = asyncio.run(launch_all(workers.launch, count))
    engine = ReplicaSet(parts, workers.launch, make_routing("slack"))
    tokenizer = TextTokenizer(default_model.tokenizer)
    return ThreadedServer(create_app(engine, tokenizer, TIERS, settings(default_model), shutdown_grace_seconds=0.0))


@pytest.fixture(scope="module")
def replicated(ray_cluster, default_model):
    workers = RayWorkers(WorkerConfig(kv_cache_tokens=KV_TOKENS, threads=1), RECIPE, num_cpus=1, num_gpus=0)
    with served(workers, 2, default_model) as server:
        yield server


@pytest.fixture(scope="module")
def single(default_model):
    """The server `niyama serve` runs without Ray: one replica, its worker a child process."""
    with served(LocalWorkers(WorkerConfig(kv_cache_tokens=KV_TOKENS), RECIPE), 1, default_model) as server:
        yield server


def generate(url: str, prompt: str, new_tokens: int = 12, tier: str = "interactive") -> list[int]:
    body = {"inputs": prompt, "parameters": {"max_new_tokens": new_tokens, "details": True}}
    answer = httpx.post(f"{url}/generate", json=body, headers={"x-qos-tier": tier}, timeout=120)
    assert answer.status_code == 200, answer.text
    return [token["id"] for token in answer.json()["details"]["tokens"]]


def generate_all(url: str, prompts: list[str], new_tokens: int = 12, tier: str = "interactive") -> list[list[int]]:
    with ThreadPoolExecutor(len(prompts)) as pool:
        return list(pool.map(lambda prompt: generate(url, prompt, new_tokens, tier), prompts))


def samples(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def replica_requests(url: str) -> dict[str, float]:
    """Finished requests per replica, from /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    counts: dict[str, float] = {}
    for replica, value in re.findall(
        r'niyama_replica_requests_total\{outcome="finished",replica="(\d+)",tier="\w+"\} (\S+)', text
    ):
        counts[replica] = counts.get(replica, 0.0) + float(value)
    return counts


def metric(url: str, name: str, replica: int) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    found = re.search(rf'{name}\{{replica="{replica}"\}} (\S+)', text)
    return float(found.group(1)) if found else float("nan")


def test_two_replicas_give_the_single_replica_servers_tokens_and_share_the_requests(replicated, single, default_model):
    spread = generate_all(replicated.url, PROMPTS)
    assert spread == generate_all(single.url, PROMPTS)
    prompt_ids = default_model.tokenizer(PROMPTS[0])["input_ids"]
    assert spread[0] == reference_greedy(default_model.model, prompt_ids, 12)
    counts = replica_requests(replicated.url)
    assert set(counts) == {"0", "1"} and sum(counts.values()) == len(PROMPTS)
    info = httpx.get(f"{replicated.url}/info").json()
    assert (info["replicas"], info["replicas_up"]) == (2, 2)


def test_a_killed_replica_does_not_take_the_service_down(replicated, single):
    replicas = replicated.state.engine
    body = {
        "inputs": "Tell me a very long story about a dragon.",
        "parameters": {"max_new_tokens": 400, "ignore_eos": True},
    }
    stream = BackgroundStream(replicated.url, body)
    assert stream.first_token.wait(60)
    victim = next(r for r in replicas.replicas if r.engine.generations)
    ray.kill(victim.parts.worker.transport.actor)
    last = stream.last_event()
    assert f"replica {victim.index} failed" in last and '"error_type":"generation"' in last
    assert "cannot be resumed" in last
    assert httpx.get(f"{replicated.url}/health").status_code == 200
    assert generate_all(replicated.url, PROMPTS[:3]) == generate_all(single.url, PROMPTS[:3])
    deadline = time.monotonic() + 180
    while metric(replicated.url, "niyama_replica_up", victim.index) != 1.0:
        assert time.monotonic() < deadline, "the killed replica was not restarted"
        time.sleep(0.5)
    assert metric(replicated.url, "niyama_replica_restarts_total", victim.index) == 1.0
    before = replica_requests(replicated.url).get(str(victim.index), 0.0)
    assert generate_all(replicated.url, PROMPTS) == generate_all(single.url, PROMPTS)
    assert replica_requests(replicated.url)[str(victim.index)] > before  # routed to again


def test_metrics_add_the_replicas_up_per_tier_beside_each_replicas_series(replicated, single):
    before = samples(replicated.url)
    generate_all(replicated.url, PROMPTS[:4], 4, tier="batch")
    after = samples(replicated.url)

    def grown(name: str, labels: dict) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    per_replica = [
        grown("niyama_replica_requests_total", {"replica": str(i), "tier": "batch", "outcome": "finished"})
        for i in range(2)
    ]
    assert sum(per_replica) == 4
    assert grown("niyama_tier_requests_total", {"tier": "batch", "outcome": "finished"}) == 4
    assert grown("niyama_slo_evaluated_total", {"tier": "batch"}) == 4
    for i in range(2):
        assert after[("niyama_replica_up", (("replica", str(i)),))] == 1.0
        assert ("niyama_replica_queue_depth", (("replica", str(i)), ("tier", "batch"))) in after
    blocks = after[("niyama_kv_blocks_total", ())]
    assert blocks == 2 * samples(single.url)[("niyama_kv_blocks_total", ())]  # both replicas' caches
    assert after[("niyama_kv_blocks_free", ())] == blocks  # all idle again
