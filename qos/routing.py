"""Which replica a new request goes to: the most predicted slack, or round-robin.

Every replica keeps its own scheduler (ARCHITECTURE.md, Scale-out), so the
front router can ask each one how the new request would fare there
(``Scheduler.outlook``): the request's first-token deadline, the prefill work
that would be served before its first token (partial prefills, the queued
requests whose priority is ahead of its own, and its own prompt), and the
prefill rate the replica's latency predictor gives for a full step at the
replica's current decode load. Its first token is predicted at
``now + work / rate``; the slack is the deadline minus that. The request goes
where its slack is largest, which is also where it delays the fewest others:
an interactive request only counts the work due before it, so it avoids
replicas busy with urgent work even if they hold less work in total, while a
batch request counts nearly everything, so batch work spreads by volume.

Round-robin (the paper's cluster set-up) ignores load: request n goes to
replica n mod N. Both return a full preference order, so the caller falls
back to the next replica when the first refuses the request or is down.
The simulator and the server's front router call the same code.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Protocol

from .errors import AdmissionError
from .outlook import Outlook
from .request import Request

# Slacks closer than this are a tie (the predictors' noise): ties take turns.
TIE_SECONDS = 0.01


class Replica(Protocol):
    """What routing asks of a replica (a ``Scheduler`` is one): how it would serve one more request."""

    def outlook(self, request: Request, now: float) -> Outlook:
        """Raises the ``AdmissionError`` that queueing ``request`` there would raise."""
        ...


class RoutingPolicy(Protocol):
    name: str

    def rank(self, replicas: Sequence[Replica], request: Request, now: float) -> list[int]:
        """Indices of ``replicas``, the preferred one first."""
        ...


class RoundRobin:
    name = "round-robin"

    def __init__(self) -> None:
        self._turns = itertools.count()

    def rank(self, replicas: Sequence[Replica], request: Request, now: float) -> list[int]:
        count = len(replicas)
        first = next(self._turns) % count if count else 0
        return [(first + offset) % count for offset in range(count)]


class SlackRouting:
    """The most predicted first-token slack first; replicas that refuse the request last."""

    name = "slack"

    def __init__(self) -> None:
        self._turns = RoundRobin()

    def rank(self, replicas: Sequence[Replica], request: Request, now: float) -> list[int]:
        turn = self._turns.rank(replicas, request, now)
        slacks: dict[int, float] = {}
        for index in turn:
            try:
                slacks[index] = replicas[index].outlook(request, now).slack(now)
            except AdmissionError:
                continue  # it would refuse the request: tried last, so its error surfaces only if all refuse
        if not slacks:
            return turn
        best = max(slacks.values())
        ties = [i for i in turn if i in slacks and slacks[i] >= best - TIE_SECONDS]
        rest = sorted((i for i in slacks if i not in ties), key=lambda i: -slacks[i])
        return ties + rest + [i for i in turn if i not in slacks]


ROUTING_POLICIES = {"slack": SlackRouting, "round-robin": RoundRobin}


def make_routing(name: str) -> RoutingPolicy:
    if name not in ROUTING_POLICIES:
        raise ValueError(f"unknown routing policy {name!r}; choose from {', '.join(ROUTING_POLICIES)}")
    return ROUTING_POLICIES[name]()
