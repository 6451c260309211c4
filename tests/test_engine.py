"""The engine (scheduler + worker + async loop) on a tiny model: exact outputs, no lost blocks, contained failures."""

import asyncio
import random
import time

import pytest
from support import make_runner, reference_greedy, tiny_llama, tiny_loaded

from niyama.engine.core import EngineCore
from niyama.engine.faults import WrappedWorker
from niyama.engine.generation import GenerationError
from niyama.engine.protocol import SamplingParams
from niyama.engine.replicas import EngineStopping, ReplicaParts, ReplicaSet
from niyama.engine.request import GenerationRequest
from niyama.qos.config import builtin_tier_config
from niyama.qos.errors import UnknownTierError
from niyama.qos.predictor import LatencyPredictor
from niyama.qos.routing import make_routing
from niyama.qos.scheduler import make_scheduler

TINY = tiny_llama()
rng = random.Random(11)
PROMPTS = [[rng.randrange(3, 211) for _ in range(rng.randint(3, 60))] for _ in range(6)]


def make_core(policy="niyama", eos=frozenset(), kv_tokens=4096, worker=None, **options):
    runner, allocator = make_runner(tiny_loaded(TINY), kv_tokens=kv_tokens, block_size=4)
    scheduler = make_scheduler(
        policy, builtin_tier_config("default"), allocator, LatencyPredictor.reference("a100-llama3-8b"), **options
    )
    return EngineCore(scheduler, worker(runner) if worker else runner, eos, time.monotonic)


def request(prompt, new_tokens, tier="interactive", ignore_eos=False):
    return GenerationRequest.of(prompt, SamplingParams(), new_tokens, tier, ignore_eos=ignore_eos)


def submitted(request_id, prompt, new_tokens, **kw):
    return request(prompt, new_tokens, **kw).submitted(request_id, time.monotonic())


@pytest.mark.parametrize("policy, options", [("fcfs", {"token_budget": 16}), ("edf", {}), ("niyama", {})])
def test_every_policy_gives_generate_s_tokens_and_frees_every_block(policy, options):
    core = make_core(policy, **options)
    outputs = {}
    for i, prompt in enumerate(PROMPTS):
        core.add(submitted(f"r{i}", prompt, 3 + i, tier=("interactive", "batch")[i % 2]))
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
    core.add(submitted("stops", PROMPTS[0], 8))
    core.add(submitted("goes-on", PROMPTS[0], 8, ignore_eos=True))
    seen = {"stops": [], "goes-on": []}
    while core.has_work:
        for out in core.step().tokens:
            seen[out.request_id].append((out.token.token_id, out.finish_reason))
    assert seen["stops"] == [(t, None) for t in first[:2]] + [(first[2], "eos_token")]
    assert [t for t, _ in seen["goes-on"]] == first and seen["goes-on"][-1][1] == "length"


def test_an_eos_that_is_also_the_last_allowed_token_reports_length_as_tgi_does():
    first = reference_greedy(TINY, PROMPTS[0], 3)
    core = make_core(eos=frozenset({first[2]}))
    core.add(submitted("a", PROMPTS[0], 3))
    reasons = []
    while core.has_work:
        reasons += [out.finish_reason for out in core.step().tokens]
    assert reasons == [None, None, "length"]


def test_a_request_that_can_never_be_served_is_refused_at_once():
    core = make_core(kv_tokens=64)
    with pytest.raises(UnknownTierError):
        core.add(submitted("a", [5, 6], 4, tier="gold"))
    with pytest.raises(ValueError, match="KV cache"):
        core.add(submitted("b", [5] * 40, 40))
    assert not core.has_work


class FailingWorker(WrappedWorker):
    """The real runner, except that chosen steps raise."""

    def __init__(self, runner, fail_steps=(2,)):
        super().__init__(runner)
        self.fail_steps, self.steps = set(fail_steps), 0

    def before_step(self, plan):
        self.steps += 1
        if self.steps in self.fail_steps:
            raise RuntimeError("injected fault")


async def collect(generation):
    return [out.token.token_id async for out in generation]


def test_async_engine_streams_aborts_and_contains_a_failed_step():
    async def scenario():
        core = make_core(worker=FailingWorker, token_budget=8, policy="fcfs")
        parts = ReplicaParts(core.scheduler, core.worker, core.eos_token_ids)
        engine = ReplicaSet([parts], None, make_routing("slack"))
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


def test_a_seed_is_fixed_at_submission_only_when_the_request_samples():
    core = make_core()
    seeds = {}
    for name, params in [
        ("greedy", SamplingParams()),
        ("seeded", SamplingParams(do_sample=True, seed=99)),
        ("drawn", SamplingParams(do_sample=True)),
        ("warped", SamplingParams(temperature=0.5, seed=3)),  # as in TGI, a warper alone turns sampling on
    ]:
        added, _ = core.add(GenerationRequest.of([5, 6], params, 2, "interactive").submitted(name, 0.0))
        seeds[name] = added.params.seed if added.params.samples else None
    assert seeds["greedy"] is None and seeds["seeded"] == 99 and seeds["warped"] == 3
    assert isinstance(seeds["drawn"], int)
