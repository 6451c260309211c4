"""The front router on in-process replicas of a tiny model: spread, exact, fallback, failover, restart.

The replicas' workers are the real `ModelRunner`; a `Mortal` wrapper lets a
test take a replica's worker away mid-run exactly as a dead Ray actor does
(`WorkerLost` from `execute`), so failure handling is tested
deterministically here, and for real on Ray in test_ray_replicas.py.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from support import make_runner, reference_greedy, tiny_llama, tiny_loaded

from niyama.engine.faults import WrappedWorker
from niyama.engine.generation import GenerationError
from niyama.engine.protocol import SamplingParams, WorkerLost
from niyama.engine.replicas import NoReplicaServing, ReplicaParts, ReplicaSet
from niyama.engine.request import GenerationRequest
from niyama.qos.config import builtin_tier_config
from niyama.qos.errors import RequestTooLargeError
from niyama.qos.predictor import LatencyPredictor
from niyama.qos.routing import make_routing
from niyama.qos.scheduler import make_scheduler

TINY = tiny_llama()
PROMPTS = [[(7 * i + 3 * j) % 200 + 5 for j in range(8 + 3 * i)] for i in range(6)]


class Mortal(WrappedWorker):
    """A runner whose worker can be lost: once `dead`, the next step raises `WorkerLost`; `gate` pauses steps."""

    def __init__(self, runner) -> None:
        super().__init__(runner)
        self.dead = False
        self.steps = 0
        self.gate = threading.Event()
        self.gate.set()

    def before_step(self, plan):
        self.gate.wait(timeout=30)
        if self.dead:
            raise WorkerLost("the worker on test-node is gone: killed by the test")
        self.steps += 1


class Recorder:
    """The app's observer: which requests ended, and how."""

    def __init__(self) -> None:
        self.outcomes: list[str | None] = []

    def step_done(self, plan, result, seconds, schedule_seconds) -> None:
        pass

    def token_done(self, generation, gap) -> None:
        pass

    def request_done(self, generation) -> None:
        self.outcomes.append(generation.finish_reason)


def parts(kv_tokens: int = 4096) -> ReplicaParts:
    runner, allocator = make_runner(tiny_loaded(TINY), kv_tokens=kv_tokens, block_size=4)
    predictor = LatencyPredictor.reference("a100-llama3-8b")
    scheduler = make_scheduler("niyama", builtin_tier_config("default"), allocator, predictor)
    return ReplicaParts(scheduler, Mortal(runner), frozenset(), where=f"tiny ({kv_tokens} KV tokens)")


def request(prompt, new_tokens, **params) -> GenerationRequest:
    return GenerationRequest.of(prompt, SamplingParams(**params), new_tokens, "interactive")


def replica_set(count: int = 2, routing: str = "slack", sizes=None) -> tuple[ReplicaSet, Recorder, list[int]]:
    launched: list[int] = []

    async def launch(index: int) -> ReplicaParts:
        launched.append(index)
        return parts()

    recorder = Recorder()
    sizes = sizes or [4096] * count
    replicas = ReplicaSet([parts(size) for size in sizes], launch, make_routing(routing), observer=recorder)
    return replicas, recorder, launched


async def tokens(generation) -> list[int]:
    return [out.token.token_id async for out in generation]


def worker(replica) -> Mortal:
    return replica.parts.worker


@pytest.mark.parametrize("routing", ["slack", "round-robin"])
def test_requests_spread_over_replicas_with_exact_outputs(routing):
    async def scenario():
        replicas, recorder, _ = replica_set(routing=routing)
        replicas.start()
        generations = [replicas.submit(request(p, 6)) for p in PROMPTS]
        outputs = await asyncio.gather(*(tokens(g) for g in generations))
        assert outputs == [reference_greedy(TINY, p, 6) for p in PROMPTS]
        assert {g.replica for g in generations} == {0, 1}
        assert all(worker(r).steps > 0 for r in replicas.replicas)
        assert recorder.outcomes == ["length"] * len(PROMPTS)
        stats = replicas.stats()
        assert stats.free_blocks == stats.total_blocks == 2 * 1024
        await replicas.drain(0.0)
        await replicas.close()

    asyncio.run(scenario())


def test_slack_routing_avoids_the_replica_with_urgent_work_queued():
    async def scenario():
        replicas, _, _ = replica_set()
        replicas.start()
        busy = replicas.replicas[0]
        worker(busy).gate.clear()  # replica 0 holds its first step: its queue stays full
        long_prompt = [11] * 300
        first = replicas.submit(request(long_prompt, 4))
        assert first.replica == 0
        queued = [replicas.submit(request(long_prompt, 4)) for _ in range(3)]
        assert [g.replica for g in queued] == [1, 0, 1]  # work ahead is balanced, not just counted
        worker(busy).gate.set()
        await asyncio.gather(*(tokens(g) for g in [first, *queued]))
        await replicas.drain(0.0)
        await replicas.close()

    asyncio.run(scenario())


def test_a_replica_that_refuses_a_request_passes_it_to_one_that_takes_it():
    async def scenario():
        replicas, _, _ = replica_set(sizes=[64, 4096])
        replicas.start()
        for _ in range(4):  # whatever the policy prefers, the small replica can never hold it
            generation = replicas.submit(request(PROMPTS[5], 60))
            assert generation.replica == 1
            assert await tokens(generation) == reference_greedy(TINY, PROMPTS[5], 60)
        with pytest.raises(RequestTooLargeError):
            replicas.submit(request([5] * 5000, 10))
        await replicas.drain(0.0)
        await replicas.close()

    asyncio.run(scenario())


def test_a_lost_replica_fails_streamed_requests_moves_the_others_and_is_replaced(caplog):
    async def scenario():
        replicas, recorder, launched = replica_set(routing="round-robin")
        replicas.start()
        lost = replicas.replicas[0]
        streaming = replicas.submit(request(PROMPTS[0], 40))
        first = await anext(streaming)  # it has produced a token: it cannot move
        worker(lost).gate.clear()  # replica 0's next step waits until the worker is gone
        filler = replicas.submit(request(PROMPTS[3], 4))
        waiting = replicas.submit(request(PROMPTS[1], 5, do_sample=True))  # queued on replica 0, no token yet
        seed = waiting.seed
        assert (streaming.replica, filler.replica, waiting.replica) == (0, 1, 0)
        worker(lost).dead = True
        worker(lost).gate.set()
        with pytest.raises(GenerationError, match=r"replica 0 failed \(.*killed by the test\) after this request had"):
            [first, *await tokens(streaming)]
        sampled = await tokens(waiting)
        assert (waiting.replica, waiting.moves, waiting.seed) == (1, 1, seed)
        assert sampled == await sample_alone(PROMPTS[1], seed)  # same seed, same tokens
        assert await tokens(filler) == reference_greedy(TINY, PROMPTS[3], 4)
        # The service goes on, on the survivor, while the lost replica is replaced.
        assert replicas.running
        assert await tokens(replicas.submit(request(PROMPTS[2], 5))) == reference_greedy(TINY, PROMPTS[2], 5)
        for _ in range(200):
            if replicas.replicas[0].up:
                break
            await asyncio.sleep(0.01)
        assert launched == [0] and replicas.slot_stats[0].restarts == 1
        assert (replicas.describe()["replicas"], replicas.describe()["replicas_up"]) == (2, 2)
        later = [replicas.submit(request(p, 3)) for p in PROMPTS]  # the new replica 0 is routed to again
        assert await asyncio.gather(*(tokens(g) for g in later)) == [reference_greedy(TINY, p, 3) for p in PROMPTS]
        assert {g.replica for g in later} == {0, 1}
        assert replicas.slot_stats[0].requests[("interactive", "moved")] == 1
        assert recorder.outcomes.count(None) == 1  # only the streamed request counts as failed
        await replicas.drain(0.0)
        await replicas.close()

    with caplog.at_level(logging.ERROR, logger="niyama"):
        asyncio.run(scenario())
    assert "replica 0 (tiny (4096 KV tokens)) is lost" in caplog.text


async def sample_alone(prompt, seed) -> list[int]:
    """What a fresh replica samples for ``prompt`` with ``seed``."""
    alone, _, _ = replica_set(count=1)
    alone.start()
    out = await tokens(alone.submit(request(prompt, 5, do_sample=True, seed=seed)))
    await alone.close()
    return out


def test_with_every_replica_down_new_requests_get_503_and_waiting_ones_a_clear_error():
    async def scenario():
        replicas, _, _ = replica_set(count=1)

        async def never(index):
            await asyncio.sleep(3600)

        replicas.launch = never
        replicas.start()
        only = replicas.replicas[0]
        worker(only).dead = True
        generation = replicas.submit(request(PROMPTS[0], 5))
        with pytest.raises(GenerationError, match="no other replica took it: no replica is serving"):
            await tokens(generation)
        assert replicas.running and not replicas.serving  # alive (/health), but nothing serves (/ready)
        with pytest.raises(NoReplicaServing):
            replicas.submit(request(PROMPTS[0], 5))
        await replicas.close()

    asyncio.run(scenario())
