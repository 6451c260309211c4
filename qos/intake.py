"""Accepting a request into the queues, or rejecting it for good (HTTP 422).

Everything that can be said about a request before it is scheduled is
checked here once: its tier exists, its overrides only tighten, it can ever
fit the KV cache. What passes becomes the scheduler's ``RequestState`` with
its deadlines fixed, and its cached prefix looked up (`reuse`).
"""

from __future__ import annotations

from .config import TierConfig
from .deadlines import first_token_deadline, token_pace
from .errors import AdmissionError, RequestTooLargeError
from .kv_blocks import BlockAllocator, blocks_for
from .policy import PolicyConfig
from .request import Request
from .reuse import enroll
from .state import RequestState


def intake_state(
    request: Request,
    tiers: TierConfig,
    ranks: dict[str, int],
    allocator: BlockAllocator,
    config: PolicyConfig,
    seq: int,
) -> RequestState:
    """The new request's state; ``UnknownTierError``, ``RequestTooLargeError`` or
    ``AdmissionError`` (non-positive lengths) otherwise."""
    tier = tiers.tier(request.tier)
    if request.prompt_len < 1 or request.max_new_tokens < 1:
        raise AdmissionError(
            f"request {request.id!r}: prompt length and max new tokens must be at least 1, "
            f"got {request.prompt_len} and {request.max_new_tokens}"
        )
    targets = tier.targets if request.targets is None else request.targets
    total = request.prompt_len + request.max_new_tokens
    if blocks_for(total, allocator.block_size) > allocator.num_blocks:
        raise RequestTooLargeError(
            f"request {request.id!r} needs {total} tokens of KV cache (prompt {request.prompt_len} + "
            f"max new tokens {request.max_new_tokens}) but the cache holds {allocator.capacity_tokens}"
        )
    deadline = first_token_deadline(
        request.arrival, targets, request.max_new_tokens, tier.expected_output_tokens, config.batch_seconds_per_token
    )
    pace = token_pace(targets, config.batch_seconds_per_token)
    index = tiers.names.index(tier.name)
    state = RequestState(request, index, ranks[tier.name], tier.interactive, targets, deadline, pace, seq)
    if config.prefix_caching and request.reuses_cache:
        enroll(state, allocator)
    return state
