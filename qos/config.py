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

The tables are pydantic models (``TierFile``, ``TierTable``, ``ApiKeyTable``,
unknown fields forbidden); their first problem becomes one line naming the
file, the tier (or key label) and the field, raised as ``QosConfigError``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from .api_keys import ApiKeyPolicy, ApiKeys, key_digest
from .durations import parse_duration
from .errors import QosConfigError, UnknownTierError
from .files import read_file
from .tiers import KIND_FIELDS, SloTargets, Tier

BUILTIN_CONFIGS = {"default": "default_tiers.toml", "paper": "paper_tiers.toml"}


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


def load_tier_config(path: str | Path) -> TierConfig:
    path = Path(path)
    data = read_file(path, "tier file", QosConfigError, tomllib.loads, (tomllib.TOMLDecodeError,), "TOML")
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
    """The configuration in ``data`` (a parsed tier file); ``QosConfigError`` naming ``source`` otherwise."""
    try:
        tier_file = TierFile.model_validate(data)
    except ValidationError as error:
        raise QosConfigError(f"{source}: {_first_problem(error.errors(include_url=False), data)}") from None
    keys = {key_digest(table.key): table.policy(index, tier_file) for index, table in enumerate(tier_file.api_keys)}
    return TierConfig(tuple(table.tier() for table in tier_file.tiers), tier_file.default, ApiKeys(keys), source)


# -- the file's tables --------------------------------------------------------


def _problem(where: str, field: str, message: str) -> PydanticCustomError:
    """A check across fields, already worded: ``where`` (a tier, a key, or "" for the file), field, message."""
    return PydanticCustomError("tier_file", "{message}", {"where": where, "field": field, "message": message})


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("empty")
    return value


def _duration(value: Any) -> float | None:
    return None if value is None else parse_duration(value)


Name = Annotated[str, Strict(), AfterValidator(_non_empty)]
Duration = Annotated[float | None, BeforeValidator(_duration)]


class TierTable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    kind: Literal["interactive", "batch"]
    ttft: Duration = None
    tbt: Duration = None
    ttlt: Duration = None
    importance: Annotated[float, Strict()] = 0.0
    expected_output_tokens: Annotated[int, Strict(), Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _targets_of_kind(self) -> TierTable:
        for target in ("ttft", "tbt", "ttlt"):
            given = getattr(self, target) is not None
            if target not in KIND_FIELDS[self.kind] and given:
                have = " and ".join(KIND_FIELDS[self.kind])
                raise _problem(f"tier {self.name!r}", target, f"{self.kind} tiers have only {have}")
            if target in KIND_FIELDS[self.kind] and not given:
                raise _problem(f"tier {self.name!r}", target, f"required for {self.kind} tiers")
        return self

    def tier(self) -> Tier:
        targets = SloTargets(**{target: getattr(self, target) for target in KIND_FIELDS[self.kind]})
        return Tier(self.name, self.kind, targets, self.importance, self.expected_output_tokens)


class ApiKeyTable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Strict(), Field(min_length=1)] | None = None
    key: Annotated[str, Strict(), Field(min_length=1)]
    tiers: Annotated[list[Annotated[str, Strict()]], Field(min_length=1)] | None = None  # None: every tier
    default_tier: Any = None  # None: the file's default
    max_concurrent_requests: Annotated[int, Strict(), Field(ge=1)] | None = None

    def label(self, index: int) -> str:
        return self.name or f"api_keys[{index}]"

    def policy(self, index: int, tier_file: TierFile) -> ApiKeyPolicy:
        allowed = tuple(dict.fromkeys(self.tiers or [t.name for t in tier_file.tiers]))
        default = tier_file.default if self.default_tier is None else self.default_tier
        return ApiKeyPolicy(self.label(index), allowed, default, self.max_concurrent_requests)


class TierFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default: Any = None  # required with more than one tier
    tiers: Annotated[list[TierTable], Field(min_length=1)]
    api_keys: list[ApiKeyTable] = []

    @model_validator(mode="after")
    def _references(self) -> TierFile:
        names: list[str] = []
        for tier in self.tiers:
            if tier.name in names:
                raise _problem(f"tier {tier.name!r}", "name", "duplicate tier name")
            names.append(tier.name)
        if self.default is None and len(names) == 1:
            self.default = names[0]
        if self.default not in names:
            problem = "required with more than one tier" if self.default is None else f"{self.default!r} is not a tier"
            raise _problem("", "default", f"{problem} (one of {', '.join(names)})")
        owners: dict[str, str] = {}
        for index, table in enumerate(self.api_keys):
            where = f"api key {table.label(index)!r}"
            for tier in table.tiers or ():
                if tier not in names:
                    raise _problem(where, "tiers", f"{tier!r} is not a tier (one of {', '.join(names)})")
            policy = table.policy(index, self)
            if policy.default_tier not in policy.tiers:
                problem = (
                    f"required, since the file default {self.default!r} is not among its tiers"
                    if table.default_tier is None
                    else f"{table.default_tier!r} is not among its tiers"
                )
                raise _problem(where, "default_tier", problem)
            digest = key_digest(table.key)
            if digest in owners:
                raise _problem(where, "key", f"same key as api key {owners[digest]!r}")
            owners[digest] = policy.label
        return self


# -- pydantic's errors as today's one-line messages -----------------------------

_MESSAGES = {
    ("tiers", "name"): lambda v: "required, a non-empty string",
    ("tiers", "kind"): lambda v: f'must be "interactive" or "batch", got {v!r}',
    ("tiers", "importance"): lambda v: f"expected a number, got {v!r}",
    ("tiers", "expected_output_tokens"): lambda v: f"expected a positive integer, got {v!r}",
    ("api_keys", "name"): lambda v: "expected a non-empty string",
    ("api_keys", "key"): lambda v: "required, a non-empty string",
    ("api_keys", "tiers"): lambda v: "expected a non-empty list of tier names",
    ("api_keys", "max_concurrent_requests"): lambda v: f"expected an integer >= 1, got {v!r}",
}
_SECTIONS = {"tiers": 1, "default": 2, "api_keys": 3}  # the order today's checks ran in; unknown fields first


def _first_problem(errors: list[ErrorDetails], data: dict) -> str:
    def order(error: ErrorDetails) -> tuple[int, int, int]:
        loc = error["loc"]
        index = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else -1
        field = loc[2] if len(loc) > 2 else None
        return (
            _SECTIONS.get(loc[0], 0) if loc else 4,
            index,
            0 if field == "name" else 1 + (error["type"] != "extra_forbidden"),
        )

    return _describe(min(errors, key=order), data)


def _describe(error: ErrorDetails, data: dict) -> str:
    loc, kind = error["loc"], error["type"]
    if kind == "tier_file":
        where, field, message = (error["ctx"][key] for key in ("where", "field", "message"))
        return f"{where + ': ' if where else ''}field {field!r}: {message}"
    if len(loc) == 1:
        return {
            "tiers": "field 'tiers': at least one [[tiers]] table is required",
            "api_keys": "field 'api_keys': expected [[api_keys]] tables",
        }.get(loc[0], f"unknown top-level field {loc[0]!r}")
    section, index = loc[0], loc[1]
    if len(loc) == 2:
        table = "a [[tiers]]" if section == "tiers" else "an [[api_keys]]"
        return f"{section}[{index}]: expected {table} table"
    field, raw = loc[2], data[section][index]
    if section == "tiers":
        name = raw.get("name")
        valid = isinstance(name, str) and name.strip() and field != "name"
        where = f"tier {name!r}" if valid else f"tiers[{index}]"
    else:
        where = f"api_keys[{index}]" if field == "name" else f"api key {raw.get('name', f'api_keys[{index}]')!r}"
    if kind == "extra_forbidden":
        return f"{where}: unknown field {field!r}"
    value = None if kind == "missing" else error.get("input")
    describe = _MESSAGES.get((section, field))
    message = describe(value) if describe else str(error["ctx"]["error"])  # the durations' own words
    return f"{where}: field {field!r}: {message}"
