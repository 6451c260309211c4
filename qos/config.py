"""Loading and validating tier files (TOML).

Format (see docs/configuration.md)::

    default = "interactive"          # the tier a request gets when it names none

    [[tiers]]                        # file order is the order of --mix shares
    name = "interactive"
    kind = "interactive"             # ttft + tbt
    ttft = "2s"
    tbt = "200ms"
    importance = 2                   # higher is more important
    expected_output_tokens = 256     # optional

    [[tiers]]
    name = "batch"
    kind = "batch"                   # ttlt
    ttlt = "1h"
    importance = 1

    [[api_keys]]                     # optional; with none the server is open
    name = "team-a"                  # label used in messages (never the key)
    key = "..."
    tiers = ["interactive", "batch"] # optional, default every tier
    default_tier = "batch"           # optional, default the file's default
    max_concurrent_requests = 8      # optional: requests this key may have in flight at once

Every error is one line naming the file, the tier (or key label) and the field.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from .api_keys import ApiKeyPolicy, ApiKeys, key_digest
from .durations import parse_duration
from .errors import QosConfigError, UnknownTierError
from .tiers import KIND_FIELDS, SloTargets, Tier

BUILTIN_CONFIGS = {"default": "default_tiers.toml", "paper": "paper_tiers.toml"}
_TIER_FIELDS = {"name", "kind", "ttft", "tbt", "ttlt", "importance", "expected_output_tokens"}
_KEY_FIELDS = {"name", "key", "tiers", "default_tier", "max_concurrent_requests"}


@dataclass(frozen=True)
class TierConfig:
    tiers: tuple[Tier, ...]
    default: str
    api_keys: ApiKeys = field(default_factory=ApiKeys)
    source: str = "<memory>"

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {tier.name: tier for tier in self.tiers})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(tier.name for tier in self.tiers)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def tier(self, name: str | None = None) -> Tier:
        """The named tier (the default one for None); ``UnknownTierError`` if absent."""
        if name is None:
            name = self.default
        tier = self._by_name.get(name)
        if tier is None:
            raise UnknownTierError(f"unknown QoS tier {name!r}; known tiers: {', '.join(self.names)}")
        return tier

    def relegation_ranks(self) -> dict[str, int]:
        """Tier -> rank, 0 for the tier relegated first: lowest importance, later in the file on ties."""
        order = sorted(range(len(self.tiers)), key=lambda i: (self.tiers[i].importance, -i))
        return {self.tiers[i].name: rank for rank, i in enumerate(order)}

    @property
    def requires_api_key(self) -> bool:
        return len(self.api_keys) > 0

    def allowed_tiers(self, api_key: str | None) -> tuple[str, ...] | None:
        """Tiers ``api_key`` may use; None for an unknown key."""
        policy = self.api_keys.lookup(api_key)
        return None if policy is None else policy.tiers

    def default_tier_for(self, api_key: str | None) -> str | None:
        """The tier a request with ``api_key`` gets when it names none; None for an unknown key."""
        policy = self.api_keys.lookup(api_key)
        return None if policy is None else policy.default_tier


def load_tier_config(path: str | Path) -> TierConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise QosConfigError(f"{path}: cannot read tier file: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise QosConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_tier_config(data, str(path))


def builtin_tier_config(name: str) -> TierConfig:
    """One of the shipped files: ``default`` (what `niyama serve` uses) or ``paper``."""
    if name not in BUILTIN_CONFIGS:
        raise QosConfigError(f"unknown built-in tier set {name!r}; choose from {', '.join(BUILTIN_CONFIGS)}")
    text = (files("niyama.qos") / "data" / BUILTIN_CONFIGS[name]).read_text(encoding="utf-8")
    return parse_tier_config(tomllib.loads(text), f"builtin:{name}")


def resolve_tier_config(spec: str) -> TierConfig:
    """A built-in name (``default``, ``paper``) or a path to a TOML file."""
    return builtin_tier_config(spec) if spec in BUILTIN_CONFIGS else load_tier_config(spec)


def parse_tier_config(data: dict, source: str) -> TierConfig:
    unknown = set(data) - {"default", "tiers", "api_keys"}
    if unknown:
        raise QosConfigError(f"{source}: unknown top-level field {sorted(unknown)[0]!r}")
    raw_tiers = data.get("tiers")
    if not isinstance(raw_tiers, list) or not raw_tiers:
        raise QosConfigError(f"{source}: field 'tiers': at least one [[tiers]] table is required")
    tiers: list[Tier] = []
    for index, raw in enumerate(raw_tiers):
        tier = _parse_tier(raw, source, index)
        if any(t.name == tier.name for t in tiers):
            raise QosConfigError(f"{source}: tier {tier.name!r}: field 'name': duplicate tier name")
        tiers.append(tier)
    names = [t.name for t in tiers]
    default = data.get("default", names[0] if len(names) == 1 else None)
    if default is None:
        raise QosConfigError(f"{source}: field 'default': required with more than one tier (one of {', '.join(names)})")
    if default not in names:
        raise QosConfigError(f"{source}: field 'default': {default!r} is not a tier (one of {', '.join(names)})")
    keys = _parse_api_keys(data.get("api_keys", []), source, names, default)
    return TierConfig(tuple(tiers), default, keys, source)


def _parse_tier(raw: object, source: str, index: int) -> Tier:
    where = f"{source}: tiers[{index}]"
    if not isinstance(raw, dict):
        raise QosConfigError(f"{where}: expected a [[tiers]] table")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise QosConfigError(f"{where}: field 'name': required, a non-empty string")
    where = f"{source}: tier {name!r}"
    unknown = set(raw) - _TIER_FIELDS
    if unknown:
        raise QosConfigError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    kind = raw.get("kind")
    if kind not in KIND_FIELDS:
        raise QosConfigError(f"{where}: field 'kind': must be \"interactive\" or \"batch\", got {kind!r}")
    targets = {}
    for target in ("ttft", "tbt", "ttlt"):
        value = raw.get(target)
        if target not in KIND_FIELDS[kind]:
            if value is not None:
                raise QosConfigError(f"{where}: field {target!r}: {kind} tiers have only {' and '.join(KIND_FIELDS[kind])}")
            continue
        if value is None:
            raise QosConfigError(f"{where}: field {target!r}: required for {kind} tiers")
        try:
            targets[target] = parse_duration(value)
        except ValueError as exc:
            raise QosConfigError(f"{where}: field {target!r}: {exc}") from None
    importance = raw.get("importance", 0)
    if isinstance(importance, bool) or not isinstance(importance, (int, float)):
        raise QosConfigError(f"{where}: field 'importance': expected a number, got {importance!r}")
    expected = raw.get("expected_output_tokens")
    if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int) or expected <= 0):
        raise QosConfigError(f"{where}: field 'expected_output_tokens': expected a positive integer, got {expected!r}")
    return Tier(name, kind, SloTargets(**targets), float(importance), expected)


def _parse_api_keys(raw_keys: object, source: str, names: list[str], default: str) -> ApiKeys:
    if not isinstance(raw_keys, list):
        raise QosConfigError(f"{source}: field 'api_keys': expected [[api_keys]] tables")
    policies: dict[str, ApiKeyPolicy] = {}
    for index, raw in enumerate(raw_keys):
        where = f"{source}: api_keys[{index}]"
        if not isinstance(raw, dict):
            raise QosConfigError(f"{where}: expected an [[api_keys]] table")
        label = raw.get("name", f"api_keys[{index}]")
        if not isinstance(label, str) or not label:
            raise QosConfigError(f"{where}: field 'name': expected a non-empty string")
        where = f"{source}: api key {label!r}"
        unknown = set(raw) - _KEY_FIELDS
        if unknown:
            raise QosConfigError(f"{where}: unknown field {sorted(unknown)[0]!r}")
        key = raw.get("key")
        if not isinstance(key, str) or not key:
            raise QosConfigError(f"{where}: field 'key': required, a non-empty string")
        allowed = raw.get("tiers", names)
        if not isinstance(allowed, list) or not allowed or not all(isinstance(t, str) for t in allowed):
            raise QosConfigError(f"{where}: field 'tiers': expected a non-empty list of tier names")
        for tier in allowed:
            if tier not in names:
                raise QosConfigError(f"{where}: field 'tiers': {tier!r} is not a tier (one of {', '.join(names)})")
        key_default = raw.get("default_tier", default)
        if key_default not in allowed:
            problem = (
                f"{key_default!r} is not among its tiers"
                if "default_tier" in raw
                else f"required, since the file default {default!r} is not among its tiers"
            )
            raise QosConfigError(f"{where}: field 'default_tier': {problem}")
        limit = raw.get("max_concurrent_requests")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise QosConfigError(f"{where}: field 'max_concurrent_requests': expected an integer >= 1, got {limit!r}")
        digest = key_digest(key)
        if digest in policies:
            raise QosConfigError(f"{where}: field 'key': same key as api key {policies[digest].label!r}")
        policies[digest] = ApiKeyPolicy(label, tuple(dict.fromkeys(allowed)), key_default, limit)
    return ApiKeys(policies)
