"""The scheduler's mutable view of one request."""

from __future__ import annotations

from .request import Request
from .tiers import SloTargets

QUEUED, PREFILLING, DECODING, DONE = "queued", "prefilling", "decoding", "done"


class RequestState:
    """Token counters, deadlines and memory of one request.

    Known tokens are ``prompt_len + generated``; ``computed`` positions have
    their KV in the cache. A request needs ``[computed, known)`` computed and
    the chunk that reaches ``known`` samples the next token. ``phase`` says
    where the scheduler keeps it: a tier queue, the partial prefills, the
    running decodes, or nowhere (done).
    """

    __slots__ = (
        "id", "request", "tier_index", "rank", "interactive", "targets", "prompt_len", "max_new",
        "generated", "computed", "first_deadline", "pace", "anchor", "seq", "admitted_seq",
        "relegated", "phase", "entry", "table", "capacity", "tokens", "keys", "published", "reusable", "reused",
    )  # fmt: skip

    def __init__(
        self, request: Request, tier_index: int, rank: int, interactive: bool,
        targets: SloTargets, first_deadline: float, pace: float, seq: int,
    ) -> None:  # fmt: skip
        self.id = request.id
        self.request = request
        self.tier_index = tier_index
        self.rank = rank
        self.interactive = interactive
        self.targets = targets
        self.prompt_len = request.prompt_len
        self.max_new = request.max_new_tokens
        self.generated = 0
        self.computed = 0
        self.first_deadline = first_deadline
        self.pace = pace
        self.anchor = first_deadline
        self.seq = seq
        self.admitted_seq = -1
        self.relegated = False
        self.phase = QUEUED
        self.entry: tuple | None = None
        self.table: tuple[int, ...] = ()
        self.capacity = 0
        # Prefix caching (`prefix_cache`): the known token ids (None: this request's blocks are not shared),
        # the keys of their full blocks, how many of its blocks it has published to the cache, the
        # tokens a queued request expects to find cached, and those it took at its last admission.
        self.tokens: list[int] | None = None
        self.keys: list[int] = []
        self.published = 0
        self.reusable = 0
        self.reused = 0

    @property
    def known(self) -> int:
        return self.prompt_len + self.generated

    @property
    def remaining(self) -> int:
        """Positions still to compute before the next token can be sampled (a cached prefix is not computed)."""
        return self.prompt_len + self.generated - max(self.computed, self.reusable)

    @property
    def started(self) -> bool:
        """Has it ever been given compute? Only requests that have not may be relegated."""
        return self.computed > 0 or self.generated > 0

    @property
    def next_deadline(self) -> float:
        """When the next token is due (see ``deadlines``)."""
        return self.first_deadline if self.generated == 0 else self.anchor + self.generated * self.pace

    def __repr__(self) -> str:
        return (
            f"RequestState({self.id!r}, {self.phase}, computed={self.computed}, "
            f"generated={self.generated}/{self.max_new}, prompt={self.prompt_len})"
        )
