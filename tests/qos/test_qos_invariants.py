"""Property test: whatever arrives and whenever it is cut short, every plan keeps the contract."""

from __future__ import annotations

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from niyama.qos.config import builtin_tier_config
from niyama.qos.errors import RequestTooLargeError
from niyama.qos.kv_blocks import BlockAllocator
from niyama.qos.plan import StepResult, StepShape
from niyama.qos.predictor import LatencyPredictor
from niyama.qos.request import Request
from niyama.qos.scheduler import make_scheduler

BLOCKS, BLOCK_SIZE = 12, 4

operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 40), st.integers(1, 12), st.integers(0, 2)),
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
        seen_blocks: set[int] = set()
        for table in plan.block_tables.values():
            assert not seen_blocks & set(table)
            seen_blocks |= set(table)
        assert len({c.request_id for c in plan.chunks}) == len(plan.chunks)
        for chunk in plan.chunks:
            model = live[chunk.request_id]
            known = model["prompt"] + model["generated"]
            assert chunk.start == model["computed"] and chunk.length >= 1
            assert chunk.end <= known
            assert chunk.sample == (chunk.end == known)
            if chunk.is_decode:
                assert chunk.length == 1 and model["generated"] >= 1
            assert len(plan.block_tables[chunk.request_id]) * BLOCK_SIZE >= chunk.end
        assert plan.shape == StepShape.of(plan.chunks)
        queues = scheduler._queues  # what the router asks of it: queued work up to a key, kept as running totals
        for key in [-1.0, 1e18, *(state.entry[0] for state in queues.ordered())]:
            assert queues.work_before(key) == sum(s.remaining for s in queues.ordered() if s.entry[0] <= key)
        assert allocator.num_free + sum(allocator.holds(rid) for rid in live) == BLOCKS
        now += seconds
        finished = scheduler.on_step(StepResult((), seconds), now)
        for chunk in plan.chunks:
            model = live[chunk.request_id]
            model["computed"] = chunk.end
            model["generated"] += chunk.sample
        assert sorted(finished) == sorted(rid for rid, m in live.items() if m["generated"] == m["new"])
        for rid in finished:
            del live[rid]

    for op in ops:
        if op[0] == "add":
            _, prompt, new, tier = op
            rid = f"r{len(added)}"
            added.append(rid)
            try:
                scheduler.add(Request(rid, tiers.names[tier], now, prompt, new), now)
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
