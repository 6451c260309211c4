"""The scheduler core every policy shares: queues, KV memory, step building.

One step (``schedule``):
1. Relegate queued requests predicted to miss (Niyama's eager relegation).
2. Make room for every running decode to grow by one token, preempting under
   KV pressure (decodes are never stalled to make room for prefills).
3. Emit one decode chunk per running decode.
4. Size the prefill budget: fixed, or dynamic from the decode slack.
5. Fill it with prefill chunks: partial prefills and queued requests in
   priority order, then relegated requests with whatever is left.

``on_step`` then advances the counters of the plan's requests. The engine
loop and the simulator drive it the same way; nothing in here reads a clock.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterator
from itertools import chain, count, islice

from .chunking import dynamic_step_tokens
from .config import TierConfig
from .errors import DuplicateRequestError
from .intake import intake_state
from .kv_blocks import BlockAllocator
from .load import LoadTracker
from .memory import affordable, decodes_fit, grow, may_admit
from .outlook import Outlook
from .plan import Chunk, Plan, StepResult, StepShape
from .policy import PolicyConfig, policy_config
from .predictor import LatencyPredictor
from .preemption import kv_victim, may_wait
from .queues import TierQueues
from .relegation import choose_relegations
from .request import Request
from .reuse import record, requeue, take
from .state import DECODING, DONE, PREFILLING, QUEUED, RequestState
from .stats import SchedulerStats, TierCounters
from .tiers import SloTargets


class Scheduler:
    def __init__(
        self, config: PolicyConfig, tiers: TierConfig, allocator: BlockAllocator, predictor: LatencyPredictor
    ) -> None:
        self.config = config
        self.tiers = tiers
        self.allocator = allocator
        allocator.retention_seconds = config.prefix_retention_seconds
        self.predictor = predictor
        self._rank_of = tiers.relegation_ranks()
        self._queues = TierQueues(len(tiers.tiers), [self._rank_of[name] for name in tiers.names])
        self._states: dict[str, RequestState] = {}
        self._prefilling: dict[str, RequestState] = {}
        self._decoding: dict[str, RequestState] = {}
        self._pending: tuple[Plan, list[RequestState], bool] | None = None
        self._arrivals = count()
        self._admissions = count()
        self._max_step = config.chunk_sizes[-1] if config.dynamic_chunking else config.token_budget
        ttfts = [tier.targets.ttft for tier in tiers.tiers if tier.targets.ttft]
        self._arrival_slack = config.arrival_guard * min(ttfts) if ttfts and config.arrival_guard else math.inf
        rate = config.initial_prefill_rate or self._largest_step_rate()
        self.load = LoadTracker(
            rate,
            config.prefill_rate_decay,
            config.alpha,
            config.alpha_levels,
            config.hybrid_priority,
            config.adaptive_alpha,
        )
        self._counts = TierCounters.zeros(len(tiers.tiers))
        self.steps = 0
        self._step_rate = (-1, 0.0)  # (steps, rate): the full-step prefill rate, predicted once per step

    def _largest_step_rate(self) -> float:
        """Prefill tokens/s of a step that is all prefill at the largest size: the rate's starting guess."""
        size = self._max_step
        return size / self.predictor.predict_parts(size, 0, 0, size)

    # -- requests in and out -------------------------------------------------

    def add(self, request: Request, now: float) -> SloTargets:
        """Queue a request; its targets as settled at intake. An ``AdmissionError`` (HTTP 422) if it can never be
        served: ``UnknownTierError`` for an unknown tier, ``RequestTooLargeError`` when its prompt plus max new
        tokens exceed the whole KV cache, ``DuplicateRequestError`` for a known id, ``AdmissionError`` for
        non-positive lengths. Deadlines count from ``request.arrival``; ``now`` is accepted for symmetry.
        """
        if request.id in self._states:
            raise DuplicateRequestError(f"request {request.id!r} is already scheduled")
        seq = next(self._arrivals)
        state = intake_state(request, self.tiers, self._rank_of, self.allocator, self.config, seq)
        self._states[request.id] = state
        self._queues.push(state, self._key(state))
        return state.targets

    def finish(self, request_id: str) -> None:
        """Release a request (EOS, stop sequence, disconnect, error): idempotent, unknown ids ignored."""
        state = self._states.get(request_id)
        if state is None:
            return
        if state.phase is QUEUED:
            self._queues.remove(state)
        self._release(state)

    def _release(self, state: RequestState) -> None:
        self.allocator.free(state.id)
        if state.phase is PREFILLING:
            del self._prefilling[state.id]
        elif state.phase is DECODING:
            del self._decoding[state.id]
        if state.relegated:
            self._counts.relegated_alive[state.tier_index] -= 1
        state.phase = DONE
        del self._states[state.id]

    def cached_tokens(self, request_id: str) -> int:
        """Known tokens the request took from the prefix cache at its (last) admission; 0 once released."""
        state = self._states.get(request_id)
        return state.reused if state is not None else 0

    def outlook(self, request: Request, now: float) -> Outlook:
        """How ``request`` would fare here, without queueing it (the front router's view; see ``routing``).

        Raises the ``AdmissionError`` that ``add`` would raise.
        """
        state = intake_state(request, self.tiers, self._rank_of, self.allocator, self.config, -1)
        work = state.remaining + sum(s.remaining for s in self._prefilling.values())
        work += self._queues.work_before(self._key(state))
        return Outlook(state.first_deadline, work, self._full_step_rate(now))

    def _full_step_rate(self, now: float) -> float:
        """Predicted prefill tokens/s of a step as large as the running decodes allow."""
        if self._step_rate[0] != self.steps:
            decodes = self._decoding.values()
            context = sum(s.computed + 1 for s in decodes)
            earliest = min((s.anchor + s.generated * s.pace for s in decodes if s.interactive), default=math.inf)
            prefill = max(1, self._prefill_budget(now, len(decodes), context, earliest, 0))
            seconds = self.predictor.predict_parts(prefill, len(decodes), context, prefill)
            self._step_rate = (self.steps, prefill / seconds)
        return self._step_rate[1]

    def _key(self, state: RequestState) -> float:
        """Queue priority, lower first: arrival (FCFS), next deadline (EDF), plus alpha x work (hybrid).

        The hybrid penalty is capped at a share of the request's own
        first-token budget: uncapped, 8 ms per token pushes a long interactive
        prompt a minute back, behind batch requests due long after it, where
        relegation only finds it once it is too late (0.7% of Q1 missed under
        transient overload uncapped, none capped, with fewer misses overall).
        """
        if self.config.ordering == "arrival":
            return state.request.arrival
        deadline = state.next_deadline
        if state.relegated:
            return deadline
        cap = self.config.hybrid_cap * (state.first_deadline - state.request.arrival)
        return deadline + min(self.load.alpha * state.remaining, cap)

    # -- one step --------------------------------------------------------------

    def schedule(self, now: float) -> Plan:
        """The next step. Calling it again before ``on_step`` discards the previous plan (its work is redone)."""
        preempted: list[str] = []
        self.allocator.now = now
        if self.config.relegation:
            self._relegate(now)
        self._relieve_decode_pressure(preempted)
        while True:
            chunks, states, tables, shape, saturated = self._build(now)
            if chunks or not self._prefilling:
                break
            # Partial prefills wedged on memory with nothing else running: one gives way.
            self._preempt(kv_victim(self._prefilling.values(), self.config.importance_preemption), preempted)
        plan = Plan(tuple(chunks), tables, tuple(preempted), shape, self.predictor.predict(shape) if chunks else 0.0)
        self._pending = (plan, states, saturated)
        return plan

    def _build(self, now: float) -> tuple[list[Chunk], list[RequestState], dict, StepShape, bool]:
        chunks: list[Chunk] = []
        states = list(self._decoding.values())
        tables: dict[str, tuple[int, ...]] = {}
        decode_context = constrained = 0
        earliest = math.inf
        for state in states:
            start = state.computed
            if start >= state.capacity:
                grow(state, start + 1, self.allocator)
            chunks.append(Chunk(state.id, start, 1, True, True))
            tables[state.id] = state.table
            decode_context += start + 1
            constrained += state.request.constrained
            # Every interactive decode bounds the step, relegated ones too: a request that
            # missed its first token should not stutter as well (this cost no goodput).
            if state.interactive:
                due = state.anchor + state.generated * state.pace
                if due < earliest:
                    earliest = due
        decodes = len(chunks)
        prefill = prefill_context = 0
        saturated = False
        limit = self._max_step - decodes
        candidates = self._candidates(now, limit) if limit > 0 else []
        if candidates:
            budget = self._prefill_budget(now, decodes, decode_context, earliest, candidates[0].computed)
            admitting = True
            for state in candidates:
                if budget <= 0:
                    break
                if state.phase is QUEUED:
                    running = len(self._decoding) + len(self._prefilling)
                    admitting = admitting and may_admit(
                        state, running, self._prefilling.values(), self.allocator, self.config
                    )
                    if not admitting:
                        continue
                    take(state, self.allocator, self.tiers.tiers[state.tier_index].importance)
                tokens = min(state.remaining, budget, affordable(state, self.allocator))
                if tokens <= 0:
                    if state.phase is QUEUED:  # it waits with nothing held: its work as it expects it now
                        self._queues.remove(state)
                        requeue(state, self.allocator)
                        self._queues.push(state, self._key(state))
                    continue
                start = state.computed
                end = start + tokens
                if end > state.capacity:
                    grow(state, end, self.allocator)
                if state.phase is QUEUED:
                    self._admit(state)
                chunks.append(Chunk(state.id, start, tokens, end == state.known, False))
                constrained += end == state.known and state.request.constrained
                states.append(state)
                tables[state.id] = state.table
                prefill += tokens
                prefill_context += end
                budget -= tokens
            saturated = budget <= 0
        shape = StepShape(prefill, decodes, decode_context, prefill_context, constrained)
        return chunks, states, tables, shape, saturated

    def _serving_order(self, now: float, step_tokens: int) -> Iterator[RequestState]:
        """Partial prefills and queued requests, not relegated, in the order they would be served.

        Without selective preemption partial prefills come first (stall-free
        batching); with it, only those that cannot afford to wait a step of
        ``step_tokens`` do, and the rest take their place by priority.
        """
        partials = list(self._prefilling.values())
        if not (self.config.selective_preemption and partials):
            return chain(partials, self._queues.ordered())
        rate = self.load.prefill_rate
        urgent = [s for s in partials if not may_wait(s, now, rate, step_tokens)]
        waiting = sorted((self._key(s), s.seq, s) for s in partials if may_wait(s, now, rate, step_tokens))
        queued = ((s.entry[0], s.seq, s) for s in self._queues.ordered())
        return chain(urgent, (entry[2] for entry in heapq.merge(waiting, queued)))

    def _candidates(self, now: float, limit: int) -> list[RequestState]:
        """Prefill candidates in serving order, relegated ones last, enough to cover ``limit`` tokens."""
        picked: list[RequestState] = []
        work = 0
        for state in chain(self._serving_order(now, limit), self._queues.relegated_ordered()):
            picked.append(state)
            work += state.remaining
            if work >= limit:
                break
        return picked

    def _prefill_budget(self, now: float, decodes: int, decode_context: int, earliest: float, offset: int) -> int:
        config = self.config
        if not config.dynamic_chunking:
            return config.token_budget - decodes
        low_memory = self.allocator.num_free < config.low_kv_fraction * self.allocator.num_blocks
        slack = min(earliest - now, self._arrival_slack)
        total = dynamic_step_tokens(
            self.predictor.predict_parts,
            config.chunk_sizes,
            config.safety_margin,
            None if slack == math.inf else slack,
            decodes,
            decode_context,
            offset,
            config.low_kv_step_tokens if low_memory else None,
        )
        return total - decodes

    # -- memory ----------------------------------------------------------------

    def _admit(self, state: RequestState) -> None:
        self._counts.admitted[state.tier_index] += state.known
        self._counts.reused[state.tier_index] += state.reused
        self._queues.remove(state)
        state.phase = PREFILLING
        state.admitted_seq = next(self._admissions)
        self._prefilling[state.id] = state

    def _relieve_decode_pressure(self, preempted: list[str]) -> None:
        """Preempt until every running decode can take its next position."""
        while not decodes_fit(self._decoding.values(), self.allocator):
            running = chain(self._decoding.values(), self._prefilling.values())
            self._preempt(kv_victim(running, self.config.importance_preemption), preempted)

    def _preempt(self, state: RequestState, preempted: list[str]) -> None:
        """Take a running request's blocks back; it is queued again and recomputed later."""
        requeue(state, self.allocator)
        if state.phase is DECODING:
            del self._decoding[state.id]
        else:
            del self._prefilling[state.id]
        state.phase = QUEUED
        self._queues.push(state, self._key(state))
        self._counts.preempted_total[state.tier_index] += 1
        preempted.append(state.id)

    def _relegate(self, now: float) -> None:
        order = self._serving_order(now, self._max_step)
        window = list(islice(order, self.config.relegation_window + len(self._prefilling)))
        for state in choose_relegations(window, now, self.load.prefill_rate):
            self._queues.remove(state)
            state.relegated = True
            self._queues.push(state, self._key(state))
            self._counts.relegated_total[state.tier_index] += 1
            self._counts.relegated_alive[state.tier_index] += 1

    # -- results -----------------------------------------------------------------

    def on_step(self, result: StepResult, now: float) -> list[str]:
        """Advance the last plan's requests; the ids that reached max new tokens (already released).

        Every sampling chunk of the plan produced one token (the token ids in
        ``result`` are the router's business); requests finished while the
        step ran are skipped. ``result.seconds`` trains the predictor.
        """
        if self._pending is None:
            return []
        plan, states, saturated = self._pending
        self._pending = None
        self.allocator.now = now
        sampled = {token.request_id: token.token_id for token in result.tokens}
        finished: list[str] = []
        for chunk, state in zip(plan.chunks, states):
            if state.phase is DONE:
                continue
            state.computed = chunk.start + chunk.length
            importance = self.tiers.tiers[state.tier_index].importance
            record(state, chunk.sample, sampled.get(state.id), self.allocator, importance)
            if not chunk.sample:
                continue
            state.generated += 1
            if state.generated == 1:
                state.anchor = max(state.first_deadline, now)
            if state.generated >= state.max_new:
                finished.append(state.id)
                self._release(state)
            elif state.phase is PREFILLING:
                del self._prefilling[state.id]
                state.phase = DECODING
                self._decoding[state.id] = state
        self.steps += 1
        self.predictor.observe(plan.shape, result.seconds)
        if self.load.observe(plan.shape.prefill_tokens, result.seconds, saturated):
            self._queues.rekey(self._key)
        return finished

    def stats(self) -> SchedulerStats:
        prefilling = Counter(state.tier_index for state in self._prefilling.values())
        running = Counter(state.tier_index for state in self._decoding.values())
        queued = [self._queues.depth(i) + self._queues.relegated_depth(i) for i in range(len(self.tiers.tiers))]
        per_tier = {
            name: self._counts.tier(i, queued[i], prefilling[i], running[i]) for i, name in enumerate(self.tiers.names)
        }
        return SchedulerStats(
            policy=self.config.name,
            tiers=per_tier,
            queued=len(self._queues),
            relegated=sum(self._counts.relegated_alive),
            prefilling=len(self._prefilling),
            running=len(self._decoding),
            relegated_total=sum(self._counts.relegated_total),
            preempted_total=sum(self._counts.preempted_total),
            free_blocks=self.allocator.num_free,
            total_blocks=self.allocator.num_blocks,
            block_size=self.allocator.block_size,
            cached_blocks=self.allocator.num_cached,
            evictions=self.allocator.evictions,
            alpha=self.load.alpha,
            prefill_rate=self.load.prefill_rate,
            predictor_error=self.predictor.error,
            steps=self.steps,
        )


def make_scheduler(
    policy: str, tiers: TierConfig, allocator: BlockAllocator, predictor: LatencyPredictor, **options: object
) -> Scheduler:
    """A scheduler running ``policy`` (fcfs, edf, niyama) with PolicyConfig ``options`` on top."""
    return Scheduler(policy_config(policy, **options), tiers, allocator, predictor)
