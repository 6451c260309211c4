"""Who is calling: the bearer token, checked against `--api-key` and the tier file's keys.

The server is open when neither is configured (any token is then ignored:
huggingface_hub sends the user's Hub token on its own). Otherwise a request to
a generation route must carry a known key, and the key decides which QoS
tiers it may use and which one it gets by default.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from starlette.datastructures import Headers

from niyama.qos.config import TierConfig

from .errors import UNAUTHORIZED, ApiError
from .settings import ServerSettings


@dataclass(frozen=True, slots=True)
class Caller:
    label: str  # for messages; never the key itself
    tiers: tuple[str, ...]  # tiers this caller may use
    default_tier: str


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
        if settings.api_key is not None and hmac.compare_digest(token.encode(), settings.api_key.encode()):
            return Caller("--api-key", tiers.names, tiers.default)
        policy = tiers.api_keys.lookup(token)
        if policy is not None:
            return Caller(f"API key {policy.label!r}", policy.tiers, policy.default_tier)
    raise ApiError(401, "a valid API key is required: send it as `Authorization: Bearer <key>`", UNAUTHORIZED)
