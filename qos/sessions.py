"""Multi-turn conversations for the simulator: requests that share prefixes, so prefix caching shows its gain.

`conversations` turns a stream of timed requests (``workload.draw_requests``:
the arrival process, the trace's lengths, the tier mix) into the turns of
chat sessions, keeping every arrival time, so the request rate and its
burstiness are what was asked for:

- An arriving request continues the open session whose last turn arrived
  longest ago, if that was at least ``think_seconds`` ago (a user reading
  the answer and typing); otherwise it starts a new session. A session
  closes after ``turns`` turns, or when its next prompt would pass
  ``max_context`` tokens.
- A turn's prompt is the session's previous prompt, the previous answer and
  a new message of the request's trace prompt length; the first turn's
  prompt is a system prompt of ``system_tokens`` (one of ``system_prompts``
  shared by all sessions, drawn per session) and its message. The session
  keeps the tier of its first turn; every turn its own output length.
- Token ids are synthetic: messages and system prompts are random ids from
  1 to 255 (small ints cost no memory in a tuple; a 16-token block of them
  repeats by chance with odds of 1 in 255^16), answers are
  ``SIMULATED_TOKEN``, the token the simulator's worker generates, so a
  turn's prompt holds exactly the tokens the previous turn produced.

What this does not model: a turn is sent at its drawn time even if the
previous answer is not finished (an open loop), so under overload later
turns find less of their history cached than a waiting user would.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, replace

from .request import Request

SIMULATED_TOKEN = 0  # every token the simulator's worker generates (engine/virtual.py)


@dataclass(frozen=True, slots=True)
class Conversations:
    turns: int = 6
    think_seconds: float = 30.0
    system_tokens: int = 0
    system_prompts: int = 1
    max_context: int = 8192

    def __post_init__(self) -> None:
        if self.turns < 1 or self.system_prompts < 1 or self.system_tokens < 0:
            raise ValueError("conversations need turns >= 1, system prompts >= 1 and system tokens >= 0")
        if self.think_seconds < 0 or self.max_context < 2:
            raise ValueError("conversations need think seconds >= 0 and a max context of at least 2 tokens")


@dataclass
class _Session:
    tier: str
    prompt: tuple[int, ...]  # the last turn's prompt and answer
    last_arrival: float
    turns: int


def conversations(requests: list[Request], shape: Conversations, seed: int) -> list[Request]:
    """``requests`` (sorted by arrival) as the turns of sessions; same ids, times and output lengths."""
    rng = random.Random(f"{seed}:conversations")

    def words(count: int) -> tuple[int, ...]:
        return tuple(rng.randrange(1, 256) for _ in range(count))

    systems = [words(shape.system_tokens) for _ in range(shape.system_prompts)]
    waiting: deque[_Session] = deque()  # open sessions, the longest-waiting first
    turns = []
    for request in requests:
        session = None
        if waiting and waiting[0].last_arrival <= request.arrival - shape.think_seconds:
            session = waiting.popleft()
            if len(session.prompt) + request.prompt_len > shape.max_context:
                session = None
        message = words(min(request.prompt_len, shape.max_context - 1))
        if session is None:
            session = _Session(request.tier, rng.choice(systems)[: shape.max_context - len(message)], 0.0, 0)
        prompt = session.prompt + message
        turns.append(replace(request, tier=session.tier, prompt_len=len(prompt), prompt_ids=prompt))
        session.prompt = prompt + (SIMULATED_TOKEN,) * request.max_new_tokens
        session.last_arrival = request.arrival
        session.turns += 1
        if session.turns < shape.turns:
            waiting.append(session)
    return turns
