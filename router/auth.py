"""Who is calling: the bearer token, checked against `--api-key` and the tier file's keys.

The server is open when neither is configured (any token is then ignored:
huggingface_hub sends the user's Hub token on its own). Otherwise a request to
a generation route must carry a known key, and the key decides which QoS
tiers it may use, which one it gets by default, and how many requests it may
have in flight. Keys are compared as SHA-256 digests with
`hmac.compare_digest`, so neither the time taken nor any message, log line or
metric reveals anything about a key; callers are named by their label.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from starlette.datastructures import Headers

from niyama.qos.api_keys import key_digest
from niyama.qos.config import TierConfig

from .errors import UNAUTHORIZED, ApiError
from .settings import ServerSettings


@dataclass(frozen=True, slots=True)
class Caller:
    label: str  # for messages; never the key itself
    tiers: tuple[str, ...]  # tiers this caller may use
    default_tier: str
    tenant: str | None = None  # whose per-key concurrency this request counts against; None when open
    max_concurrent: int | None = None  # the key's own limit from the tier file, if it has one


def bearer_token(headers: Headers) -> str | None:
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def authenticate(headers: Headers, settings: ServerSettings, tiers: TierConfig) -> Caller:
    if settings.api_key is None and not tiers.requires_api_key:
        return Caller("anonymous", tiers.names, tiers.default)
    token = bearer_token(headers)
    if token is not None:
        if settings.api_key is not None and hmac.compare_digest(key_digest(token), key_digest(settings.api_key)):
            return Caller("--api-key", tiers.names, tiers.default, "--api-key")
        policy = tiers.api_keys.lookup(token)
        if policy is not None:
            label = f"API key {policy.label!r}"
            return Caller(label, policy.tiers, policy.default_tier, key_digest(token), policy.max_concurrent_requests)
    raise ApiError(401, "a valid API key is required: send it as `Authorization: Bearer <key>`", UNAUTHORIZED)
