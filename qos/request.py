"""What the router (or the simulator) hands the scheduler for each request."""

from __future__ import annotations

from dataclasses import dataclass

from .tiers import SloTargets


@dataclass(frozen=True, slots=True)
class Request:
    """A request as the scheduler sees it: token counts and targets, no text.

    ``targets`` are the request's own targets when it tightened its tier's
    (resolved once, where the request is made: ``tiers.apply_overrides``);
    None keeps the tier's. ``arrival`` is on the same clock as the ``now``
    given to the scheduler. ``prompt_ids``, when given, let it start from
    KV blocks another request with the same first tokens computed
    (``prefix_cache``); without them its blocks are its own.
    """

    id: str
    tier: str
    arrival: float
    prompt_len: int
    max_new_tokens: int
    targets: SloTargets | None = None
    prompt_ids: tuple[int, ...] = ()

    @property
    def constrained(self) -> bool:
        """Whether a grammar masks each of its tokens, a per-token cost the step-time prediction counts.

        A property, not a field: only the engine's requests (`engine.request.GenerationRequest`) can say yes.
        """
        return False

    @property
    def reuses_cache(self) -> bool:
        """Whether its prompt may start from cached KV blocks (it must name its tokens)."""
        return bool(self.prompt_ids)
