"""`niyama serve` as TGI's launcher: every flag also from its environment variable, and TGI's other flags.

TGI reads each launcher flag from the variable named after it (`--model-id`
from `MODEL_ID`, `--max-input-tokens` from `MAX_INPUT_TOKENS`), and every
Docker, Kubernetes, SageMaker and Vertex set-up relies on that; so does
`niyama serve`, for each of its flags (the run options of `add_run_options`
included), the flag on the command line winning over the variable. An
option with several names (`--kv-tokens`, TGI's `--max-batch-total-tokens`)
or several options sharing a destination (`--max-running` and TGI's
`--max-batch-size`) read each name's variable; two of them set differently
is an error. A variable set to the empty string counts as unset.

TGI flags that have no meaning here (`INAPPLICABLE`) are still recognised, so
that a TGI command line or environment fails with one line saying what
Niyama offers instead, rather than argparse's generic "unrecognized
arguments"; a value that asks for what Niyama does anyway (`NUM_SHARD=1`,
`SHARDED=false`, platform images set those) is accepted.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

TRUE, FALSE = ("true", "1", "yes", "on", "t", "y"), ("false", "0", "no", "off", "f", "n")
ANY = ("*",)  # accepted whatever the value: it changes nothing here


class LaunchError(Exception):
    """A flag or variable `niyama serve` cannot start with; the message is one line, naming it."""


def env_name(option: str) -> str:
    """TGI's variable of a long option: `--max-input-tokens` -> `MAX_INPUT_TOKENS`."""
    return option.removeprefix("--").replace("-", "_").upper()


@dataclass(frozen=True)
class Inapplicable:
    """A TGI launcher flag with no meaning in Niyama, and what to use instead."""

    flag: str
    instead: str
    accepted: tuple[str, ...] = ()  # values that ask for what Niyama does anyway (lower case)
    switch: bool = False  # a TGI boolean flag given without a value (`--ngrok`); from the environment: true/false
    env: bool = True  # TGI reads it from its variable (`--env` alone is not)

    def check(self, value: str, source: str) -> str:
        if ANY == self.accepted or value.strip().lower() in self.accepted:
            return value
        raise LaunchError(f"{source}: not available in Niyama: {self.instead}")


SHARDS = "one model copy runs per replica: --replicas N for copies, --gpus-per-replica N to spread one over N GPUs"
INAPPLICABLE = (
    Inapplicable("--sharded", SHARDS, FALSE),
    Inapplicable("--num-shard", SHARDS, ("1",)),
    Inapplicable("--quantize", "the checkpoint is served at --dtype (float32|bfloat16|float16); a .gguf model file "
                 "is de-quantised once at load"),
    Inapplicable("--speculate", "there is no speculative decoding; remove the flag"),
    Inapplicable("--kv-cache-dtype", "the KV cache is kept in the model's --dtype"),
    Inapplicable("--validation-workers", "requests are validated on the server's event loop; remove the flag",
                 ("1",)),
    Inapplicable("--waiting-served-ratio", "running requests are never paused for a prefill: prompts are chunked "
                 "into the decode steps by deadline (--token-budget, --chunk-sizes, the tier file)"),
    Inapplicable("--max-waiting-tokens", "waiting requests join every step by deadline (--token-budget, "
                 "--chunk-sizes, the tier file); there is no decode streak to wait for"),
    Inapplicable("--cuda-graphs", "there are no CUDA graphs; remove the flag", ("0", "")),
    Inapplicable("--prometheus-port", "/metrics is served on --port, with the API"),
    Inapplicable("--shard-uds-path", "workers talk to the server over pipes (or Ray); remove the flag"),
    Inapplicable("--master-addr", "there is no torch.distributed group: several hosts join with --ray-address"),
    Inapplicable("--master-port", "there is no torch.distributed group: several hosts join with --ray-address"),
    Inapplicable("--weights-cache-override", "give the local folder itself as --model-id"),
    Inapplicable("--disable-custom-kernels", "there are no custom kernels", ANY, switch=True),
    Inapplicable("--cuda-memory-fraction", "size the KV cache with --kv-tokens (TGI's --max-batch-total-tokens); "
                 "by default it takes a share of the free memory", ("1", "1.0")),
    Inapplicable("--rope-scaling", "the checkpoint's rope_scaling (config.json) is used; edit it there"),
    Inapplicable("--rope-factor", "the checkpoint's rope_scaling (config.json) is used; edit it there"),
    Inapplicable("--otlp-endpoint", "there are no OpenTelemetry traces: scrape /metrics (Prometheus)"),
    Inapplicable("--otlp-service-name", "there is no --otlp-endpoint", ANY),
    Inapplicable("--ngrok", "run a tunnel in front of the server", FALSE, switch=True),
    Inapplicable("--ngrok-authtoken", "run a tunnel in front of the server"),
    Inapplicable("--ngrok-edge", "run a tunnel in front of the server"),
    Inapplicable("--tokenizer-config-path", "put the chat template in the model folder's tokenizer_config.json"),
    Inapplicable("--disable-grammar-support", "grammars are always supported", FALSE, switch=True),
    Inapplicable("--lora-adapters", "adapters are not supported: serve a checkpoint with the adapter merged in"),
    Inapplicable("--usage-stats", "Niyama sends no usage statistics", ("off",)),
    Inapplicable("--enable-prefill-logprobs", "prompt logprobs are always available", ANY, switch=True),
    Inapplicable("--env", "the model, device and limits are logged at start-up and served at GET /info",
                 switch=True, env=False),
)  # fmt: skip


class _Refused(argparse.Action):
    """An inapplicable TGI flag on the command line: one line unless its value is accepted."""

    def __init__(self, option_strings, dest, flag: Inapplicable, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0 if flag.switch else None, **kwargs)
        self.flag = flag

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        value = "true" if self.flag.switch else str(values)
        self.flag.check(value, self.flag.flag if self.flag.switch else f"{self.flag.flag} {value}")


def add_inapplicable(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TGI launcher flags with no meaning here (each fails, saying what to use)")
    for flag in INAPPLICABLE:
        note = "accepted, no effect: " if flag.accepted == ANY else ""
        group.add_argument(flag.flag, action=_Refused, flag=flag, default=None, help=note + flag.instead,
                           metavar=None if flag.switch else "VALUE")  # fmt: skip


def apply_environment(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Make each option's variable in ``environ`` its default, so a flag given still wins (LaunchError if bad)."""
    by_dest: dict[str, list[argparse.Action]] = {}
    for action in parser._actions:
        if any(option.startswith("--") for option in action.option_strings) and action.dest != "help":
            by_dest.setdefault(action.dest, []).append(action)
    for actions in by_dest.values():
        found = {
            name: (action, environ[name])
            for action in actions
            for name in map(env_name, action.option_strings)
            if environ.get(name, "") != "" and _has_env(action)
        }
        if not found:
            continue
        if len({text for _, text in found.values()}) > 1:
            raise LaunchError(f"{' and '.join(found)} are set differently; set one of them")
        name, (action, text) = next(iter(found.items()))
        value = _value(action, name, text)
        for each in actions:
            each.default = value


def value_of(environ: Mapping[str, str], name: str, kind: Callable[[str], object]) -> object:
    """Variable ``name`` read as ``kind`` (LaunchError naming it if it is not one)."""
    try:
        return kind(environ[name])
    except ValueError:
        raise LaunchError(f"{name}={environ[name]}: not a valid {kind.__name__}") from None


def check_hostname(hostname: str) -> None:
    """An address to listen on, or a name that resolves to one (Docker sets HOSTNAME to the container's name,
    which resolves to the container's address); anything else is one line now rather than a traceback later."""
    try:
        ipaddress.ip_address(hostname)
        return
    except ValueError:
        pass
    try:
        socket.getaddrinfo(hostname, None)
    except (socket.gaierror, UnicodeError) as error:
        raise LaunchError(
            f"--hostname/HOSTNAME {hostname!r} is neither an IP address nor a name that resolves ({error}); "
            "give an address to listen on, e.g. 0.0.0.0 for every interface"
        ) from None


def env_names(action: argparse.Action) -> list[str]:
    """The variables an option is read from (none for --help and TGI's --env)."""
    if not _has_env(action) or action.dest == "help":
        return []
    return [env_name(option) for option in action.option_strings if option.startswith("--")]


def _has_env(action: argparse.Action) -> bool:
    return not isinstance(action, _Refused) or action.flag.env


def _value(action: argparse.Action, name: str, text: str) -> object:
    """``text`` of variable ``name`` as the option's value, checked as the flag's would be."""
    source = f"{name}={text}"
    if isinstance(action, _Refused):
        return action.flag.check(str(_boolean(source, text)).lower() if action.flag.switch else text, source)
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)):
        on = _boolean(source, text)
        return not on if isinstance(action, argparse._StoreFalseAction) else on
    if isinstance(action, argparse._AppendAction):
        return [item.strip() for item in text.split(",") if item.strip()]
    try:
        value = action.type(text) if callable(action.type) else text
    except (argparse.ArgumentTypeError, TypeError, ValueError) as error:
        kind = getattr(action.type, "__name__", "value")
        raise LaunchError(f"{source}: not a valid {kind} for {action.option_strings[0]} ({error})") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise LaunchError(f"{source}: {action.option_strings[0]} must be one of {choices}")
    return value


def _boolean(source: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in TRUE or lowered in FALSE:
        return lowered in TRUE
    raise LaunchError(f"{source}: expected true or false")
