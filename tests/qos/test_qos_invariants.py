"""Property test: whatever arrives and whenever it is cut short, every plan keeps the contract.

Requests name their tokens, drawn from three streams, so prompts share
prefixes of any length and the prefix cache is exercised: a fresh or
preempted request may start after whole cached blocks, and a block two
requests hold is one neither of them writes.
"""

from __future__ import annotations

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from niyama.qos.config import builtin_tier_config
from niyama.qos.errors import RequestTooLargeError
from niyama.qos.kv_blocks import BlockAllocator
from niyama.qos.plan import SampledToken, StepResult, StepShape
from niyama.qos.predictor import LatencyPredictor
from niyama.qos.request import Request
from niyama.qos.scheduler import make_scheduler

BLOCKS, BLOCK_SIZE = 12, 4
STREAMS = [[1000 * stream + i for i in range(40)] for stream in range(3)]
GENERATED = 7  # every sampled token: same prompts continue alike, so generated blocks are shared too

operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 40), st.integers(1, 12), st.integers(0, 2), st.integers(0, 2)),
        st.tuples(st.just("step"), st.floats(0.001, 2.0)),
        st.tuples(st.just("finish"), st.integers(0, 30)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=st.sampled_from(["fcfs", "edf", "niyama"]), ops=operations, budget=st.sampled_from([8, 64, 256]))
def test_plans_keep_the_contract(policy, ops, budget):
    tiers = builtin_tier_config("paper")
    allocator = BlockAllocator(BLOCKS, BLOCK_SIZE)
    predictor = LatencyPredictor.reference("a100-llama3-8b")
    scheduler = make_scheduler(policy, tiers, allocator, predictor, token_budget=budget)
    live: dict[str, dict] = {}
    added: list[str] = []
    now = 0.0

    def step(seconds: float) -> None:
        nonlocal now
        plan = scheduler.schedule(now)
        for rid in plan.preempted:
            live[rid]["computed"] = 0
            event("preempted")
        holders: dict[int, int] = {}
        for rid in live:
            for block in allocator.table(rid):
                holders[block] = holders.get(block, 0) + 1
        assert allocator.num_free + len(holders) == BLOCKS  # every block free, cached or held, shared ones once
        assert len({c.request_id for c in plan.chunks}) == len(plan.chunks)
        for chunk in plan.chunks:
            model = live[chunk.request_id]
            known = model["prompt"] + model["generated"]
            table = plan.block_tables[chunk.request_id]
            shared = [i for i, block in enumerate(table) if holders[block] > 1]
            assert all((i + 1) * BLOCK_SIZE <= chunk.start for i in shared)  # read, never written
            skipped = model["computed"] == 0 and chunk.start % BLOCK_SIZE == 0  # a cached prefix, whole blocks
            assert (chunk.start == model["computed"] or skipped) and chunk.length >= 1
            assert chunk.end <= known
            assert chunk.sample == (chunk.end == known)
            if chunk.is_decode:
                assert chunk.length == 1 and model["generated"] >= 1
            assert len(plan.block_tables[chunk.request_id]) * BLOCK_SIZE >= chunk.end
        assert plan.shape == StepShape.of(plan.chunks)
        queues = scheduler._queues  # what the router asks of it: queued work up to a key, kept as running totals
        for key in [-1.0, 1e18, *(state.entry[0] for state in queues.ordered())]:
            assert queues.work_before(key) == sum(s.remaining for s in queues.ordered() if s.entry[0] <= key)
        now += seconds
        sampled = tuple(SampledToken(c.request_id, GENERATED, 0.0) for c in plan.chunks if c.sample)
        finished = scheduler.on_step(StepResult(sampled, seconds), now)
        for chunk in plan.chunks:
            model = live[chunk.request_id]
            model["computed"] = chunk.end
            model["generated"] += chunk.sample
        assert sorted(finished) == sorted(rid for rid, m in live.items() if m["generated"] == m["new"])
        for rid in finished:
            del live[rid]

    for op in ops:
        if op[0] == "add":
            _, prompt, new, tier, stream = op
            rid = f"r{len(added)}"
            added.append(rid)
            try:
                scheduler.add(
                    Request(rid, tiers.names[tier], now, prompt, new, None, tuple(STREAMS[stream][:prompt])), now
                )
            except RequestTooLargeError:
                assert prompt + new > BLOCKS * BLOCK_SIZE
                continue
            live[rid] = {"prompt": prompt, "new": new, "generated": 0, "computed": 0}
        elif op[0] == "step":
            step(op[1])
        elif op[1] < len(added):
            scheduler.finish(added[op[1]])
            live.pop(added[op[1]], None)
            assert allocator.holds(added[op[1]]) == 0
    # Drained, everything completes: nothing stalls, nothing leaks.
    for _ in range(2000):
        if not live:
            break
        step(0.05)
    assert not live
    assert allocator.num_free == BLOCKS
    assert scheduler.schedule(now).is_empty
