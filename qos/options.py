"""One run configuration for `niyama serve`, `niyama simulate` and the Python API.

A ``RunConfig`` is everything about the server that scheduling depends on:
the tiers, the policy (a preset plus any ``PolicyConfig`` knob), the KV cache,
the latency model, the replicas and the routing across them. Both commands
register the same flags with ``add_run_options`` and build the configuration
with ``run_config``; the sources, later ones winning, are the command's
defaults, a run file (``--config run.toml``) and the flags given. The
effective configuration can be written back (``--save-config run.toml``), so a
simulated run can be served as is, and a served one simulated.

Run file (TOML; relative paths count from the file's folder)::

    tiers = "paper"                  # a built-in set or a tier file
    routing = "slack"
    replicas = 1
    latency_model = "a100-llama3-8b" # omitted: serve profiles the device

    [policy]
    name = "niyama"                  # the preset...
    token_budget = 512               # ...and the knobs that differ from it

    [cache]
    kv_tokens = 400000               # omitted: serve sizes the cache from free memory
    block_size = 16

    [truth]                          # the simulated or emulated device (serve: only with --emulate)
    noise = 0.1                      # lognormal spread of each step's time around the latency model
    bias = 1.25                      # the device is this many times slower than the model says

Every problem is one line naming the flag (``--token-budget must be at least
1, got 0``) or the file and field, raised as ``QosConfigError``.
"""

from __future__ import annotations

import argparse
import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from .config import BUILTIN_CONFIGS, TierConfig, resolve_tier_config
from .errors import QosConfigError
from .files import read_file
from .policy import KNOBS, NIYAMA_MECHANISMS, POLICIES, OptionError, PolicyConfig, option_error, policy_config
from .policy import policy_overrides as _overrides
from .predictor import REFERENCE_MODELS

COMMANDS = ("serve", "simulate")
# What differs between the commands when neither a flag nor a file says: serve measures its device.
DEFAULTS: dict[str, dict[str, object]] = {
    "serve": {"tiers": "default", "cache.kv_tokens": None, "latency_model": None},
    "simulate": {"tiers": "paper", "cache.kv_tokens": 400_000, "latency_model": "a100-llama3-8b"},
}
MECHANISMS = {mechanism.replace("_", "-"): mechanism for mechanism in NIYAMA_MECHANISMS}
ROUTING = ("slack", "round-robin")
# Flag of each field; a second name is an alias (TGI's flags, and serve's former names).
FLAGS: dict[str, tuple[str, ...]] = {
    "tiers": ("--tiers", "--qos-config"),
    "routing": ("--routing",),
    "replicas": ("--replicas",),
    "latency_model": ("--latency-model", "--latency-profile"),
    "cache.kv_tokens": ("--kv-tokens", "--max-batch-total-tokens"),
    "cache.block_size": ("--block-size",),
    "truth.noise": ("--truth-noise",),
    "truth.bias": ("--truth-bias",),
    "policy.name": ("--policy",),
    **{f"policy.{knob}": ("--" + knob.replace("_", "-"),) for knob in KNOBS},
}
FLAGS["policy.max_running"] += ("--max-batch-size",)  # TGI's name
_DEST = {key: key.split(".")[-1] if key != "policy.name" else "policy" for key in FLAGS}
_METAVARS = {"ordering": "arrival|deadline", "chunk_sizes": "N,N,...", "max_running": "N|none"}
_PATHS = {"tiers": BUILTIN_CONFIGS, "latency_model": REFERENCE_MODELS}  # a built-in name, else a path


def _preset(value: Any) -> Any:
    """A policy table ``{"name": "niyama", "token_budget": 512}`` is its preset with those knobs."""
    if isinstance(value, dict):
        return policy_config(value.get("name", "niyama"), **{k: v for k, v in value.items() if k != "name"})
    return value


class _Table(BaseModel):
    """A frozen model whose invalid values raise a one-line ``OptionError`` ("replicas must be at least 1, got 0")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise option_error(error, "run option", tuple(type(self).model_fields)) from None


class CacheConfig(_Table):
    kv_tokens: Annotated[int, Field(ge=1)] | None = None  # None: serve sizes it from free memory
    block_size: int = Field(16, ge=1)


class TruthConfig(_Table):
    """How the simulated or emulated device departs from the latency model (`engine/truth.py`)."""

    noise: float = Field(0.0, ge=0, allow_inf_nan=False)
    bias: float = Field(1.0, gt=0, allow_inf_nan=False)


class RunConfig(_Table):
    """The effective configuration of a run; frozen, and equal for equal runs."""

    tiers: str = "default"  # a built-in tier set or a path
    policy: Annotated[PolicyConfig, BeforeValidator(_preset)] = Field(default_factory=lambda: policy_config("niyama"))
    cache: CacheConfig = CacheConfig()
    truth: TruthConfig = TruthConfig()
    routing: Literal["slack", "round-robin"] = "slack"
    latency_model: str | None = None  # a reference model or a profile; None: serve profiles the device
    replicas: int = Field(1, ge=1)

    @classmethod
    def load(cls, path: str | Path, command: str = "simulate") -> RunConfig:
        """A saved run, over ``command``'s defaults."""
        values, origins = dict(_defaults(command)), {}
        _merge(values, origins, read_run_file(path), str(path))
        return _build(values, origins)

    def policy_config(self) -> PolicyConfig:
        """The scheduler's ``PolicyConfig`` (validated with the rest)."""
        return self.policy

    def tier_config(self) -> TierConfig:
        return resolve_tier_config(self.tiers)

    def as_dict(self) -> dict[str, Any]:
        """The whole effective configuration, every policy knob included: JSON-able (for /info and reports)."""
        return self.model_dump(mode="json")

    def to_toml(self, folder: str | Path = ".") -> str:
        """A run file: the policy as its preset plus the knobs that differ, paths relative to ``folder``."""
        lines = ["# niyama run configuration (docs/configuration.md): niyama serve|simulate --config FILE"]
        for key in ("tiers", "routing", "replicas", "latency_model"):
            value = getattr(self, key)
            if key in _PATHS and value is not None and value not in _PATHS[key] and not os.path.isabs(value):
                value = os.path.relpath(os.path.abspath(value), os.path.abspath(folder))
            lines += [] if value is None else [f"{key} = {_toml(value)}"]
        lines += ["", "[policy]", f"name = {_toml(self.policy.name)}"]
        lines += [f"{knob} = {_toml(value)}" for knob, value in _overrides(self.policy).items()]
        lines += ["", "[cache]"]
        lines += [f"{key} = {_toml(value)}" for key, value in self.cache.model_dump().items() if value is not None]
        if self.truth != TruthConfig():
            lines += ["", "[truth]"] + [f"{key} = {_toml(value)}" for key, value in self.truth.model_dump().items()]
        return "\n".join(lines) + "\n"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_toml(Path(path).parent), encoding="utf-8")


def add_run_options(parser: argparse.ArgumentParser, command: str = "simulate") -> None:
    """Register the run options, the same in every command; ``command`` only words the defaults in the help."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; choose from {', '.join(COMMANDS)}")
    own = DEFAULTS[command]
    run = parser.add_argument_group("run configuration (the same in niyama serve and simulate)")
    run.add_argument("--config", dest="config_file", metavar="RUN.toml", help="a saved run; flags override it")
    run.add_argument("--save-config", metavar="PATH", help="write the effective run configuration (TOML) to PATH")
    builtin, references = "|".join(BUILTIN_CONFIGS), "|".join(REFERENCE_MODELS)
    emulated = " (with --emulate)" if command == "serve" else ""
    helps = {
        "tiers": f"{builtin}|PATH.toml (default {own['tiers']!r})",
        "routing": "across replicas (default slack)",
        "replicas": "replicas sharing the workload, each with its own scheduler (default 1)",
        "latency_model": f"{references}|PROFILE.json (default {own['latency_model'] or 'profile this device'})",
        "cache.kv_tokens": f"KV cache in tokens (default {own['cache.kv_tokens'] or 'sized from free memory'})",
        "cache.block_size": "KV block size in tokens (default 16)",
        "truth.noise": f"lognormal spread of the device's step times around the latency model{emulated} (default 0)",
        "truth.bias": f"the device is this many times slower than the latency model says{emulated} (default 1)",
    }
    for key, help_text in helps.items():
        kind = {"type": _scalar, "metavar": "N"} if key in ("replicas", "cache.kv_tokens", "cache.block_size") else {}
        kind = {"type": _scalar, "metavar": "X"} if key.startswith("truth.") else kind
        choices = {"choices": ROUTING} if key == "routing" else {}
        metavar = {"metavar": "NAME|PATH"} if key in _PATHS else {}
        run.add_argument(*FLAGS[key], dest=_DEST[key], help=help_text, **kind, **choices, **metavar)
    policy = parser.add_argument_group("scheduling policy (default: the preset's value; docs/configuration.md)")
    policy.add_argument("--policy", metavar="NAME", help=f"{'|'.join(POLICIES)} (default niyama)")
    policy.add_argument("--without", metavar="MECHANISMS", help=f"switch off, comma-separated: {','.join(MECHANISMS)}")
    cap = "cap every step at N tokens: --token-budget N and the --chunk-sizes up to N (TGI's name)"
    policy.add_argument("--max-batch-prefill-tokens", type=_scalar, metavar="N", help=cap)
    niyama = policy_config("niyama")
    for knob in KNOBS:
        field, default = PolicyConfig.model_fields[knob], getattr(niyama, knob)
        if field.annotation is bool:
            help_text = f"{field.description} (niyama: {'on' if default else 'off'})"
            policy.add_argument(*FLAGS[f"policy.{knob}"], action=argparse.BooleanOptionalAction, help=help_text)
            continue
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else "none" if default is None else default
        if knob == "max_running" and command == "serve":
            shown = "--max-concurrent-requests"
        metavar = _METAVARS.get(knob) or ("N" if isinstance(default, int) else "X")
        help_text = f"{field.description} (niyama: {shown})"
        policy.add_argument(*FLAGS[f"policy.{knob}"], type=_scalar, metavar=metavar, help=help_text)


def run_config(
    args: argparse.Namespace, command: str = "simulate", max_concurrent_requests: int | None = None
) -> RunConfig:
    """The effective configuration: ``command``'s defaults < ``--config`` < the flags given.

    Writes it to ``--save-config`` when that is given. With ``max_concurrent_requests`` (serve's
    ``--max-concurrent-requests``), ``max_running`` defaults to it and may not exceed it. Raises
    ``QosConfigError`` (one line) for a bad file or value.
    """
    values, origins = dict(_defaults(command)), {}
    if args.config_file:
        _merge(values, origins, read_run_file(args.config_file), args.config_file)
    flags = {key: getattr(args, _DEST[key]) for key in FLAGS if getattr(args, _DEST[key], None) is not None}
    for key, builtins in _PATHS.items():
        if key in flags and flags[key] not in builtins:
            flags[key] = os.path.normpath(flags[key])
    for mechanism in filter(None, (m.strip() for m in (args.without or "").split(","))):
        if mechanism not in MECHANISMS:
            raise QosConfigError(f"--without: unknown mechanism {mechanism!r}; choose from {', '.join(MECHANISMS)}")
        key = f"policy.{MECHANISMS[mechanism]}"
        if flags.get(key):
            raise QosConfigError(f"{FLAGS[key][0]} contradicts --without {mechanism}")
        flags[key] = False
    if args.max_batch_prefill_tokens is not None:
        _cap_steps(args.max_batch_prefill_tokens, flags, values)
    _merge(values, origins, flags, None)
    if max_concurrent_requests is not None:
        running = values.setdefault("policy.max_running", max_concurrent_requests)
        if isinstance(running, int) and running > max_concurrent_requests:
            where = _label("policy.max_running", origins)
            raise QosConfigError(
                f"{where}cannot exceed --max-concurrent-requests ({max_concurrent_requests}), got {running}"
            )
    config = _build(values, origins)
    if args.save_config:
        config.save(args.save_config)
    return config


def read_run_file(path: str | Path) -> dict[str, object]:
    """A run file's values by dotted key (``policy.token_budget``), paths made relative to the working folder."""
    data = read_file(Path(path), "run file", QosConfigError, tomllib.loads, (tomllib.TOMLDecodeError,), "TOML")
    values: dict[str, object] = {}
    for key, value in data.items():
        if key in ("policy", "cache", "truth"):
            if not isinstance(value, dict):
                raise QosConfigError(f"{path}: field {key!r}: expected a [{key}] table")
            values.update((f"{key}.{name}", item) for name, item in value.items())
        else:
            values[key] = value
    for key in values:
        if key not in FLAGS:
            raise QosConfigError(f"{path}: unknown field {key!r}")
    folder = os.path.dirname(os.path.abspath(path))
    for key, builtins in _PATHS.items():
        value = values.get(key)
        if isinstance(value, str) and value not in builtins and not os.path.isabs(value):
            values[key] = os.path.relpath(os.path.join(folder, value))
    return values


def _defaults(command: str) -> dict[str, object]:
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; choose from {', '.join(COMMANDS)}")
    return {"policy.name": "niyama", **DEFAULTS[command]}


def _merge(values: dict, origins: dict, layer: dict, source: str | None) -> None:
    """Put ``layer`` over ``values``; ``source`` is the file it came from (None: flags)."""
    for key, value in layer.items():
        values[key] = value
        origins[key] = source


def _label(key: str, origins: dict) -> str:
    """How a message names the value at ``key``: its flag, or its file and field."""
    source = origins.get(key)
    return f"{FLAGS[key][0]} " if source is None else f"{source}: field {key!r}: "


def _cap_steps(cap: object, flags: dict, values: dict) -> None:
    """--max-batch-prefill-tokens N: every step at most N tokens, with fixed or dynamic chunking."""
    if "policy.token_budget" in flags:
        raise QosConfigError("give --token-budget or --max-batch-prefill-tokens, not both")
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise QosConfigError(f"--max-batch-prefill-tokens must be a positive integer, got {cap!r}")
    sizes = flags.get("policy.chunk_sizes", values.get("policy.chunk_sizes"))
    sizes = policy_config("niyama", **({} if sizes is None else {"chunk_sizes": sizes})).chunk_sizes
    flags["policy.token_budget"] = cap
    flags.setdefault("policy.chunk_sizes", tuple(size for size in sizes if size <= cap) or (cap,))


def _build(values: dict, origins: dict) -> RunConfig:
    name = values["policy.name"]
    if name not in POLICIES:
        raise QosConfigError(
            f"{_label('policy.name', origins)}unknown policy {name!r}; choose from {', '.join(POLICIES)}"
        )
    tables: dict[str, dict] = {"policy": {}, "cache": {}, "truth": {}, "": {}}
    for key, value in values.items():
        table, _, field = key.rpartition(".")
        tables[table][field] = value
    del tables["policy"]["name"]

    def checked(table: str, build):
        try:
            return build(**tables[table])
        except OptionError as error:
            key = f"{table}.{error.field}" if table else error.field
            raise QosConfigError(f"{_label(key, origins)}{error.problem}") from None

    policy = checked("policy", lambda **knobs: policy_config(name, **knobs))
    cache, truth = checked("cache", CacheConfig), checked("truth", TruthConfig)
    return checked("", lambda **plain: RunConfig(policy=policy, cache=cache, truth=truth, **plain))


def _scalar(text: str) -> int | float | str:
    """A flag's value as TOML would type it: an integer, a number, else the text (pydantic validates it)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(_toml, value)) + "]"
    if value is None:
        return '"none"'
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's
