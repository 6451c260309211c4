"""A generation that may move to another replica until it has produced its first token.

The routes hold one of these as they would hold an engine's `Generation`
(same iteration, `take_ready`, `aclose`, `timing`, `seed`). When the replica
serving it is lost, the request either moves (no token was produced yet, so
nothing the client saw is lost; it keeps its seed and arrival, so the same
tokens and deadlines) or ends with an error that names the replica and why.
A request moves at most once: a request whose own step kills the worker (say,
memory exhausted by its prompt) would otherwise take every replica down in
turn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .engine import Generation, GenerationError
from .engine_core import TokenOutput

if TYPE_CHECKING:
    from .replicas import Replica, ReplicaSet

MAX_MOVES = 1


class RoutedGeneration:
    def __init__(self, replicas: ReplicaSet, generation: Generation, replica: Replica) -> None:
        self._set = replicas
        self._generation = generation
        self.replica = replica
        self.moves = 0
        self._closed = False

    @property
    def request_id(self) -> str:
        return self._generation.request_id

    @property
    def request(self):
        return self._generation.request

    @property
    def timing(self):
        return self._generation.timing

    @property
    def seed(self) -> int | None:
        return self._generation.seed

    @property
    def finish_reason(self) -> str | None:
        return self._generation.finish_reason

    @property
    def error(self) -> str | None:
        return self._generation.error

    @property
    def done(self) -> bool:
        return self._generation.done

    def __aiter__(self) -> RoutedGeneration:
        return self

    async def __anext__(self) -> TokenOutput:
        while True:
            try:
                return await self._generation.__anext__()
            except GenerationError:
                if self._closed or not self.replica.failed:
                    raise
                self._move()

    def take_ready(self) -> list[TokenOutput]:
        return self._generation.take_ready()

    async def aclose(self, finish_reason: str | None = None) -> None:
        self._closed = True
        await self._generation.aclose(finish_reason)

    def _move(self) -> None:
        """Resubmit to another replica, or raise the error the client sees."""
        lost, replica = self._generation, self.replica
        sent = len(lost.timing.token_times)
        why = f"replica {replica.index} failed ({replica.failure})"
        if sent:
            raise GenerationError(f"{why} after this request had produced {sent} tokens; it cannot be resumed")
        if self.moves >= MAX_MOVES:
            self._set.report_lost(lost)
            raise GenerationError(f"{why}, and this request had already moved from a failed replica")
        try:
            self._generation, self.replica = self._set.place(lost.request, lost.timing.arrival)
        except Exception as refusal:
            self._set.report_lost(lost)
            raise GenerationError(f"{why} before this request produced a token, and no other replica took it: "
                                  f"{refusal}") from None  # fmt: skip
        self.moves += 1
