"""The engine (scheduler + worker + async loop) on a tiny model: exact outputs, no lost blocks, contained failures."""

import asyncio
import random
import time

import pytest
from support import make_runner, reference_greedy, tiny_llama, tiny_loaded

from niyama.qos.config import builtin_tier_config
from niyama.qos.errors import UnknownTierError
from niyama.qos.predictor import LatencyPredictor
from niyama.qos.scheduler import make_scheduler
from niyama.router.engine import AsyncEngine, EngineStopping, GenerationError
from niyama.router.engine_core import EngineCore, GenerationRequest
from niyama.worker.sampling import SamplingParams

TINY = tiny_llama()
rng = random.Random(11)
PROMPTS = [[rng.randrange(3, 211) for _ in range(rng.randint(3, 60))] for _ in range(6)]


def make_core(policy="niyama", eos=frozenset(), kv_tokens=4096, worker=None, **options):
    runner, allocator = make_runner(tiny_loaded(TINY), kv_tokens=kv_tokens, block_size=4)
    scheduler = make_scheduler(
        policy, builtin_tier_config("default"), allocator, LatencyPredictor.reference("a100-llama3-8b"), **options
    )
    return EngineCore(scheduler, worker(runner) if worker else runner, eos, time.monotonic)


def request(prompt, new_tokens, tier="interactive", **kw):
    return GenerationRequest(tuple(prompt), SamplingParams(), new_tokens, tier, **kw)


@pytest.mark.parametrize("policy, options", [("fcfs", {"token_budget": 16}), ("edf", {}), ("niyama", {})])
def test_every_policy_gives_generate_s_tokens_and_frees_every_block(policy, options):
    core = make_core(policy, **options)
    outputs = {}
    for i, prompt in enumerate(PROMPTS):
        core.add(f"r{i}", request(prompt, 3 + i, tier=("interactive", "batch")[i % 2]), time.monotonic())
        outputs[f"r{i}"] = []
    reasons = {}
    while core.has_work:
        step = core.step()
        assert not step.failed
        for out in step.tokens:
            outputs[out.request_id].append(out.token.token_id)
            reasons[out.request_id] = out.finish_reason
    for i, prompt in enumerate(PROMPTS):
        assert outputs[f"r{i}"] == reference_greedy(TINY, prompt, 3 + i)
    assert set(reasons.values()) == {"length"}
    stats = core.scheduler.stats()
    assert stats.free_blocks == stats.total_blocks
    assert core.worker.sequences == {}


def test_eos_ends_a_request_unless_ignored():
    first = reference_greedy(TINY, PROMPTS[0], 8)
    eos = frozenset({first[2]})
    core = make_core(eos=eos)
    core.add("stops", request(PROMPTS[0], 8), time.monotonic())
    core.add("goes-on", request(PROMPTS[0], 8, ignore_eos=True), time.monotonic())
    seen = {"stops": [], "goes-on": []}
    while core.has_work:
        for out in core.step().tokens:
            seen[out.request_id].append((out.token.token_id, out.finish_reason))
    assert seen["stops"] == [(t, None) for t in first[:2]] + [(first[2], "eos_token")]
    assert [t for t, _ in seen["goes-on"]] == first and seen["goes-on"][-1][1] == "length"


def test_an_eos_that_is_also_the_last_allowed_token_reports_length_as_tgi_does():
    first = reference_greedy(TINY, PROMPTS[0], 3)
    core = make_core(eos=frozenset({first[2]}))
    core.add("a", request(PROMPTS[0], 3), time.monotonic())
    reasons = []
    while core.has_work:
        reasons += [out.finish_reason for out in core.step().tokens]
    assert reasons == [None, None, "length"]


def test_a_request_that_can_never_be_served_is_refused_at_once():
    core = make_core(kv_tokens=64)
    with pytest.raises(UnknownTierError):
        core.add("a", request([5, 6], 4, tier="gold"), time.monotonic())
    with pytest.raises(ValueError, match="KV cache"):
        core.add("b", request([5] * 40, 40), time.monotonic())
    assert not core.has_work


class FailingWorker:
    """The real runner, except that chosen steps raise."""

    def __init__(self, runner, fail_steps=(2,)):
        self.runner, self.fail_steps, self.steps = runner, set(fail_steps), 0

    def add_sequence(self, *args):
        return self.runner.add_sequence(*args)

    def remove_sequence(self, request_id):
        self.runner.remove_sequence(request_id)

    def execute(self, plan):
        self.steps += 1
        if self.steps in self.fail_steps:
            raise RuntimeError("injected fault")
        return self.runner.execute(plan)


async def collect(generation):
    return [out.token.token_id async for out in generation]


def test_async_engine_streams_aborts_and_contains_a_failed_step():
    async def scenario():
        core = make_core(worker=FailingWorker, token_budget=8, policy="fcfs")
        engine = AsyncEngine(core)
        engine.start()
        doomed = engine.submit(request(PROMPTS[1], 20))
        assert doomed.seed is None
        with pytest.raises(GenerationError, match="injected fault"):
            await collect(doomed)
        # The server goes on: the next request succeeds, exactly.
        assert await collect(engine.submit(request(PROMPTS[2], 6))) == reference_greedy(TINY, PROMPTS[2], 6)
        # A client that goes away mid-stream: its blocks are free at once.
        leaving = engine.submit(request(PROMPTS[3], 30))
        async for _ in leaving:
            break
        await leaving.aclose()
        stats = core.scheduler.stats()
        assert stats.free_blocks == stats.total_blocks and engine.in_flight == 0
        # Several at once, each exact.
        results = await asyncio.gather(*(collect(engine.submit(request(p, 5))) for p in PROMPTS))
        assert results == [reference_greedy(TINY, p, 5) for p in PROMPTS]
        # Shutdown: running requests get the grace period, then a clear error; new ones are refused.
        slow = engine.submit(request(PROMPTS[4], 200))
        await engine.drain(grace_seconds=0.0)
        with pytest.raises(GenerationError, match="shut down"):
            await collect(slow)
        with pytest.raises(EngineStopping):
            engine.submit(request(PROMPTS[0], 2))
        await engine.close()
        assert core.scheduler.stats().free_blocks == core.scheduler.stats().total_blocks

    asyncio.run(scenario())
