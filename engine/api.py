"""What the HTTP layer may use of the engine: the `Engine` it holds and the `GenerationHandle`s it iterates.

`replicas.ReplicaSet` is the one engine (a server without `--replicas` is a
set of one) and `generation.Generation` the one handle; the router is typed
against these protocols, so it never reaches past them into schedulers,
loops or workers.
"""

from __future__ import annotations

from typing import Protocol

from niyama.qos.slo import SloTracker
from niyama.qos.stats import SchedulerStats

from .request import GenerationRequest, TokenOutput


class GenerationHandle(Protocol):
    request: GenerationRequest
    slo: SloTracker
    admitted: float | None  # when its first step ran (TGI's queue time ends there)
    cached_tokens: int  # prompt tokens it took from the prefix cache rather than computing them
    finished: float | None  # when it ended, however it ended
    finish_reason: str | None
    error: str | None

    @property
    def request_id(self) -> str: ...

    @property
    def seed(self) -> int | None: ...

    @property
    def done(self) -> bool: ...

    @property
    def ended_as(self) -> str | None:
        """`qos.slo`'s FINISHED, CANCELLED (its client left) or FAILED once done; None before."""
        ...

    def __aiter__(self) -> GenerationHandle: ...

    async def __anext__(self) -> TokenOutput: ...

    def take_ready(self) -> list[TokenOutput]: ...

    async def aclose(self, finish_reason: str | None = None) -> None: ...


class Engine(Protocol):
    @property
    def running(self) -> bool:
        """Liveness (/health)."""
        ...

    @property
    def accepting(self) -> bool:
        """False once shutting down."""
        ...

    @property
    def serving(self) -> int:
        """Replicas that take requests now (/ready)."""
        ...

    @property
    def in_flight(self) -> int: ...

    def start(self) -> None: ...

    def submit(self, request: GenerationRequest) -> GenerationHandle: ...

    def stats(self) -> SchedulerStats: ...

    def describe(self) -> dict[str, object]: ...

    async def drain(self, grace_seconds: float) -> None: ...

    async def close(self) -> None: ...
