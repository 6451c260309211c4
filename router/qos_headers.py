"""A request's QoS tier and latency targets, from its headers, its body, or its API key.

Precedence, per field: the header (`x-qos-tier`, `x-slo-ttft-ms`,
`x-slo-tbt-ms`, `x-slo-ttlt-ms`), then the body's `qos` object, then the
caller's default tier with the tier's own targets. Headers win because every
client can set them without touching the body. Targets may only tighten the
tier's (qos decides, and says why when they do not). This is the one place a
request's targets are resolved; the engine, the scheduler and the metrics
read them from the request.

An unknown tier is a 422 `validation` error; a tier the caller's key may not
use is a 403 `forbidden`.
"""

from __future__ import annotations

import math

from starlette.datastructures import Headers

from niyama.qos.config import TierConfig
from niyama.qos.errors import AdmissionError
from niyama.qos.tiers import SloTargets, apply_overrides

from .auth import Caller
from .errors import FORBIDDEN, ApiError, validation_error
from .schemas import QosRequest

TIER_HEADER = "x-qos-tier"
TARGET_HEADERS = {"ttft": "x-slo-ttft-ms", "tbt": "x-slo-tbt-ms", "ttlt": "x-slo-ttlt-ms"}


def _milliseconds(header: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise validation_error(f"header `{header}` must be a positive number of milliseconds. Given: {raw!r}")
    return value


def resolve_qos(
    headers: Headers, body: QosRequest | None, tiers: TierConfig, caller: Caller
) -> tuple[str, SloTargets | None]:
    """The request's tier, and its own targets when it tightened the tier's (None keeps them)."""
    body = body or QosRequest()
    name = headers.get(TIER_HEADER) or body.tier or caller.default_tier
    try:
        tier = tiers.tier(name)
    except AdmissionError as error:
        raise validation_error(str(error)) from None
    if tier.name not in caller.tiers:
        raise ApiError(
            403, f"{caller.label} may not use QoS tier {tier.name!r}; allowed: {', '.join(caller.tiers)}", FORBIDDEN
        )
    targets: dict[str, float | None] = {}
    for field, header in TARGET_HEADERS.items():
        raw = headers.get(header)
        milliseconds = _milliseconds(header, raw) if raw is not None else getattr(body, f"{field}_ms")
        targets[field] = None if milliseconds is None else milliseconds / 1000.0
    if all(value is None for value in targets.values()):
        return tier.name, None
    try:
        return tier.name, apply_overrides(tier, **targets)
    except AdmissionError as error:
        raise validation_error(str(error)) from None
