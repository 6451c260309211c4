"""Prefix caching: requests that share a prompt prefix reuse its KV blocks, and their outputs stay exact.

The engine tests run the real scheduler and worker on a tiny model: greedy
outputs equal `model.generate` token for token whatever is shared, wherever
prefixes end, however steps are chunked, under eviction and preemption. The
ledger tests pin the rules: shared blocks counted once, a block some request
reads never evicted, tier-aware retention.
"""

from __future__ import annotations

import random
import time

import pytest
import requests
from harden_support import metric
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from router_server import tiny_server
from support import make_runner, reference_greedy, tiny_llama, tiny_loaded

from niyama.engine.core import EngineCore
from niyama.engine.protocol import SamplingParams
from niyama.engine.request import GenerationRequest
from niyama.qos.config import builtin_tier_config
from niyama.qos.kv_blocks import BlockAllocator
from niyama.qos.predictor import LatencyPredictor
from niyama.qos.prefix_cache import block_keys, retention_key
from niyama.qos.scheduler import make_scheduler

TINY = tiny_llama()
TIERS = builtin_tier_config("default")  # interactive (importance 2) and batch (importance 1)


def engine(kv_tokens: int, block_size: int = 4, policy: str = "niyama", **options) -> EngineCore:
    runner, allocator = make_runner(tiny_loaded(TINY), kv_tokens=kv_tokens, block_size=block_size)
    scheduler = make_scheduler(policy, TIERS, allocator, LatencyPredictor.reference("a100-llama3-8b"), **options)
    return EngineCore(scheduler, runner, frozenset(), time.monotonic)


def submit(core: EngineCore, request_id: str, prompt: list[int], new_tokens: int, tier: str = "interactive") -> None:
    request = GenerationRequest.of(prompt, SamplingParams(), new_tokens, tier, ignore_eos=True)
    core.add(request.submitted(request_id, time.monotonic()))


def run(core: EngineCore, arrivals: dict[int, list[tuple]]) -> dict[str, list[int]]:
    """Submit each step's arrivals ``(id, prompt, new tokens[, tier])`` before it; every request's tokens."""
    outputs: dict[str, list[int]] = {}
    step = 0
    while core.has_work or any(at >= step for at in arrivals):
        for request_id, prompt, new_tokens, *tier in arrivals.get(step, []):
            submit(core, request_id, prompt, new_tokens, *tier)
            outputs[request_id] = []
        if core.has_work:
            result = core.step()
            assert not result.failed
            for out in result.tokens:
                outputs[out.request_id].append(out.token.token_id)
            allocator = core.scheduler.allocator
            held = {block for rid in core.worker.sequences for block in allocator.table(rid)}
            assert allocator.num_free + len(held) == allocator.num_blocks  # every block free, cached or held once
        step += 1
    return outputs


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shared=st.lists(st.integers(3, 210), min_size=0, max_size=40),
    tails=st.lists(st.lists(st.integers(3, 210), min_size=1, max_size=12), min_size=2, max_size=5),
    steps=st.lists(st.integers(0, 6), min_size=5, max_size=5),
    new_tokens=st.lists(st.integers(1, 8), min_size=5, max_size=5),
    kv_tokens=st.sampled_from([64, 96, 1024]),
    policy=st.sampled_from(["fcfs", "niyama"]),
    budget=st.sampled_from([3, 8, 64]),
    block_size=st.sampled_from([1, 4, 16]),
)
def test_shared_prefixes_give_generate_s_tokens_under_any_chunking_eviction_and_preemption(
    shared, tails, steps, new_tokens, kv_tokens, policy, budget, block_size
):
    core = engine(kv_tokens, block_size, policy, token_budget=budget)
    jobs = [(f"r{i}", shared + tail, new_tokens[i]) for i, tail in enumerate(tails)]
    arrivals: dict[int, list[tuple]] = {}
    for i, job in enumerate(jobs):
        arrivals.setdefault(steps[i], []).append(job)
    outputs = run(core, arrivals)
    for request_id, prompt, count in jobs:
        assert outputs[request_id] == reference_greedy(TINY, prompt, count), request_id
    stats = core.scheduler.stats()
    assert stats.free_blocks == stats.total_blocks and core.worker.sequences == {}
    event(f"prefix tokens reused: {'some' if stats.tiers['interactive'].prompt_tokens_cached else 'none'}")
    event(f"preempted: {'some' if stats.preempted_total else 'none'}; evicted: {'some' if stats.evictions else 'none'}")


@pytest.mark.parametrize("policy, budget", [("niyama", 64), ("fcfs", 3)])
def test_a_tiny_cache_shares_evicts_and_preempts_and_every_output_stays_exact(policy, budget):
    rng = random.Random(1)
    shared = [rng.randrange(3, 211) for _ in range(20)]
    jobs = [(f"r{i}", shared + [rng.randrange(3, 211) for _ in range(6)], 14) for i in range(5)]
    core = engine(64, 4, policy, token_budget=budget)  # 16 blocks: each request needs 10 at its end
    outputs = run(core, {0: jobs[:3], 2: jobs[3:]})
    for request_id, prompt, count in jobs:
        assert outputs[request_id] == reference_greedy(TINY, prompt, count), request_id
    stats = core.scheduler.stats()
    assert stats.tiers["interactive"].prompt_tokens_cached >= 3 * 20 and stats.evictions > 0
    assert stats.preempted_total > 0 or policy == "fcfs"


def test_a_second_turn_starts_after_the_first_turn_s_prompt_and_answer():
    rng = random.Random(3)
    first = [rng.randrange(3, 211) for _ in range(37)]
    core = engine(1024)
    answer = run(core, {0: [("turn1", first, 9)]})["turn1"]
    second = first + answer + [rng.randrange(3, 211) for _ in range(5)]
    out = run(core, {0: [("turn2", second, 6)]})
    assert out["turn2"] == reference_greedy(TINY, second, 6)
    # 37 + 9 known tokens when turn 1 ended: its first 45 (the last token's KV is never computed) fill 11 blocks.
    tier = core.scheduler.stats().tiers["interactive"]
    assert tier.prompt_tokens_cached == 44 and tier.prompt_tokens_computed == 37 + (len(second) - 44)


def test_the_last_prompt_token_is_always_computed_so_the_first_token_comes_from_fresh_logits():
    prompt = list(range(3, 35))  # 32 tokens: 8 full blocks of 4
    core = engine(1024)
    run(core, {0: [("a", prompt, 2)]})
    out = run(core, {0: [("b", prompt, 2)]})
    assert out["b"] == reference_greedy(TINY, prompt, 2)
    assert core.scheduler.stats().tiers["interactive"].prompt_tokens_cached == 28  # 7 blocks, not 8


def test_a_request_that_asks_for_prompt_logprobs_computes_its_whole_prompt():
    prompt = list(range(3, 40))
    core = engine(1024)
    run(core, {0: [("a", prompt, 1)]})
    request = GenerationRequest.of(prompt, SamplingParams(prompt_logprobs=True), 1, "interactive")
    core.add(request.submitted("b", time.monotonic()))
    while core.has_work:
        core.step()
    assert core.scheduler.stats().tiers["interactive"].prompt_tokens_cached == 0


def test_no_prefix_caching_computes_every_token():
    prompt = list(range(3, 40))
    core = engine(1024, prefix_caching=False)
    run(core, {0: [("a", prompt, 1)], 1: [("b", prompt, 1)]})
    stats = core.scheduler.stats()
    assert stats.tiers["interactive"].prompt_tokens_cached == 0 and stats.cached_blocks == 0


# -- the ledger ------------------------------------------------------------------------------------------------------


def keyed(allocator: BlockAllocator, request_id: str, tokens: list[int], importance: float = 0.0) -> list[int]:
    """``request_id`` computes ``tokens`` into fresh blocks and publishes each full one."""
    keys = block_keys(tokens, allocator.block_size, len(tokens) // allocator.block_size)
    allocator.grow(request_id, len(tokens))
    for index, key in enumerate(keys):
        allocator.publish(request_id, index, key, importance)
    return keys


def test_shared_blocks_are_counted_once_and_freed_when_their_last_reader_goes():
    allocator = BlockAllocator(8, 4)
    keys = keyed(allocator, "a", list(range(12)))
    assert allocator.share("b", keys[:2], 0.0) == 2
    assert allocator.table("b") == allocator.table("a")[:2]
    assert allocator.num_free == 5  # 3 held by a (2 of them read by b too)
    allocator.free("a")
    assert allocator.num_free == 6 and allocator.num_cached == 3  # b still reads 2; the third is cached, free
    allocator.free("b")
    assert allocator.num_free == 8 and allocator.num_cached == 3


def test_a_block_a_request_reads_is_never_evicted():
    allocator = BlockAllocator(4, 4)
    keys = keyed(allocator, "a", list(range(8)))
    allocator.free("a")
    allocator.share("b", keys[:1], 0.0)  # b reads the first block; the second is cached, unread
    allocator.grow("c", 12)  # needs 3: the two free blocks and the unread cached one
    assert allocator.evictions == 1 and allocator.cached_prefix(keys) == 1
    assert allocator.table("b")[0] not in allocator.table("c")
    with pytest.raises(Exception, match="needs 1 more KV blocks"):
        allocator.grow("d", 1)


def test_retention_evicts_the_least_important_tier_first_then_the_least_recent():
    assert retention_key(100.0, 0.0, 60.0) < retention_key(50.0, 1.0, 60.0)  # importance buys 60 s
    assert retention_key(50.0, 1.0, 0.0) < retention_key(100.0, 0.0, 0.0)  # 0 s: plain LRU
    allocator = BlockAllocator(3, 4, retention_seconds=60.0)
    allocator.now = 0.0
    chat = keyed(allocator, "chat", list(range(4)), importance=2.0)
    allocator.free("chat")
    for t, doc in enumerate(([50, 51, 52, 53], [60, 61, 62, 63]), start=1):
        allocator.now = float(t)
        keyed(allocator, f"doc{t}", doc)
        allocator.free(f"doc{t}")
    allocator.now = 10.0
    allocator.grow("next", 8)  # two blocks: both batch documents go, the older chat prompt stays
    assert allocator.evictions == 2 and allocator.cached_prefix(chat) == 1


def test_a_high_importance_prefix_survives_a_flood_of_low_importance_documents():
    rng = random.Random(5)
    system = [rng.randrange(3, 211) for _ in range(32)]
    core = engine(256, prefix_retention_seconds=1e6)  # 64 blocks of 4
    run(core, {0: [("chat0", system + [7, 8], 2)]})
    for n in range(6):  # each batch document fills and releases 24 blocks
        run(core, {0: [(f"doc{n}", [rng.randrange(3, 211) for _ in range(90)], 2, "batch")]})
    assert core.scheduler.stats().evictions > 0
    before = core.scheduler.stats().tiers["interactive"].prompt_tokens_cached
    out = run(core, {0: [("chat1", system + [9, 10], 2)]})
    assert out["chat1"] == reference_greedy(TINY, system + [9, 10], 2)
    assert core.scheduler.stats().tiers["interactive"].prompt_tokens_cached - before == 32


def test_metrics_show_each_tier_s_cached_and_computed_prompt_tokens():
    prompt = "Summarise: " + "the meeting moved to Tuesday and the budget was approved. " * 8
    with tiny_server() as server:
        for _ in range(2):
            body = {"inputs": prompt, "parameters": {"max_new_tokens": 2}}
            assert requests.post(server.url + "/generate", json=body, timeout=30).status_code == 200
        prompt_tokens = int(requests.post(server.url + "/generate", json=body, timeout=30).headers["x-prompt-tokens"])
        cached = metric(server, 'niyama_prompt_tokens_cached_total{tier="interactive"}')
        computed = metric(server, 'niyama_prompt_tokens_computed_total{tier="interactive"}')
        assert cached == 2 * ((prompt_tokens - 1) // 16 * 16)  # the 2nd and 3rd requests: all but the last block
        assert cached + computed == 3 * prompt_tokens
        assert metric(server, "niyama_kv_blocks_cached") >= prompt_tokens // 16
        assert metric(server, "niyama_kv_evictions_total") == 0


def test_answers_report_the_prompt_tokens_the_cache_served():
    """OpenAI's usage.prompt_tokens_details.cached_tokens (absent when none, as TGI's usage), x-cached-tokens."""
    from openai import OpenAI

    text = "Summarise: " + "the meeting moved to Tuesday and the budget was approved. " * 8
    with tiny_server() as server:
        client = OpenAI(base_url=server.url + "/v1", api_key="-")
        messages = [{"role": "user", "content": text}]
        first = client.chat.completions.create(model="m", messages=messages, max_tokens=2, temperature=0)
        again = client.chat.completions.create(model="m", messages=messages, max_tokens=2, temperature=0)
        prompt_tokens = first.usage.prompt_tokens
        assert first.usage.prompt_tokens_details is None
        assert again.usage.prompt_tokens_details.cached_tokens == (prompt_tokens - 1) // 16 * 16
        client.completions.create(model="m", prompt=text, max_tokens=2)
        stream = client.completions.create(model="m", prompt=text, max_tokens=2, stream=True,
                                           stream_options={"include_usage": True})  # fmt: skip
        chunks = list(stream)
        requests.post(server.url + "/generate", json={"inputs": text, "parameters": {"max_new_tokens": 1}}, timeout=30)
        answer = requests.post(server.url + "/generate", json={"inputs": text, "parameters": {"max_new_tokens": 1}},
                               timeout=30)  # fmt: skip
    completion_prompt = chunks[-1].usage.prompt_tokens
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == (completion_prompt - 1) // 16 * 16
    generate_prompt = int(answer.headers["x-prompt-tokens"])
    assert int(answer.headers["x-cached-tokens"]) == (generate_prompt - 1) // 16 * 16
