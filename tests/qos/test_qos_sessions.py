"""Multi-turn conversations for the simulator: each turn's prompt is the last prompt, its answer and a message."""

from __future__ import annotations

import pytest

from niyama.engine.simulator import SimSetup, simulate
from niyama.qos.config import builtin_tier_config
from niyama.qos.policy import policy_config
from niyama.qos.request import Request
from niyama.qos.sessions import SIMULATED_TOKEN, Conversations, conversations

TIERS = builtin_tier_config("paper")


def stream(times: list[float], prompt: int = 10, output: int = 4) -> list[Request]:
    return [Request(f"r{i}", TIERS.names[i % 3], t, prompt, output) for i, t in enumerate(times)]


def test_a_turn_continues_its_session_with_the_answer_and_a_new_message():
    shape = Conversations(turns=3, think_seconds=5.0, system_tokens=6)
    turns = conversations(stream([0.0, 1.0, 6.5, 7.0, 13.0, 20.0]), shape, seed=1)
    assert [t.arrival for t in turns] == [0.0, 1.0, 6.5, 7.0, 13.0, 20.0]  # the arrival process is kept
    first, second, third, fourth, fifth, sixth = turns
    assert first.prompt_len == len(first.prompt_ids) == 6 + 10
    assert second.prompt_ids[:6] == first.prompt_ids[:6]  # the one system prompt, a new session (1 s < 5 s)
    assert third.prompt_ids[: 16 + 4] == first.prompt_ids + (SIMULATED_TOKEN,) * 4  # r0's session, 6.5 s on
    assert third.tier == first.tier and third.prompt_len == 16 + 4 + 10
    assert fourth.prompt_ids[:20] == second.prompt_ids + (SIMULATED_TOKEN,) * 4
    assert fifth.prompt_ids[:34] == third.prompt_ids + (SIMULATED_TOKEN,) * 4  # its 3rd and last turn
    assert sixth.prompt_ids[:34] == fourth.prompt_ids + (SIMULATED_TOKEN,) * 4
    assert all(0 < token < 256 for t in turns for token in t.prompt_ids if token != SIMULATED_TOKEN)


def test_a_session_ends_after_its_turns_or_before_its_context_overflows():
    turns = conversations(stream([0.0, 10.0, 20.0]), Conversations(turns=2, think_seconds=1.0), seed=0)
    assert turns[1].prompt_ids[:14] == turns[0].prompt_ids + (0,) * 4 and turns[2].prompt_len == 10
    short = conversations(stream([0.0, 10.0], prompt=30), Conversations(think_seconds=1.0, max_context=50), seed=0)
    assert short[1].prompt_len == 30  # 30 + 4 + 30 > 50: a new session


def test_the_same_seed_gives_the_same_conversations_and_bad_shapes_are_refused():
    requests = stream([0.0, 3.0, 40.0])
    assert conversations(requests, Conversations(), 7) == conversations(requests, Conversations(), 7)
    with pytest.raises(ValueError, match="turns >= 1"):
        Conversations(turns=0)


def test_the_simulator_serves_later_turns_from_the_cache():
    requests = conversations(stream([i * 2.0 for i in range(60)], prompt=400, output=50),
                             Conversations(turns=6, think_seconds=10.0, system_tokens=300), seed=0)  # fmt: skip
    for caching in (True, False):
        setup = SimSetup(TIERS, policy_config("niyama", prefix_caching=caching))
        stats = simulate(setup, requests).stats
        cached = sum(tier.prompt_tokens_cached for tier in stats.tiers.values())
        computed = sum(tier.prompt_tokens_computed for tier in stats.tiers.values())
        assert cached + computed == sum(r.prompt_len for r in requests)  # nothing preempted at this load
        assert (cached > computed) if caching else cached == 0
