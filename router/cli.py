"""The `niyama` command: one entry point, each subcommand imported only when used.

Subcommands own their arguments (`main(argv) -> int`), so `niyama simulate`
never pays for importing torch and `niyama serve` never for the simulator.
"""

from __future__ import annotations

import importlib
import os
import sys

# OpenMP threads that spin while waiting made two-thread CPU steps 2.5-11x slower than one-thread ones
# whenever anything else ran on the machine (docs/results/qos_evaluation.md); sleeping threads cost
# little when it is idle. Set before torch loads; an explicit OMP_WAIT_POLICY still wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("niyama.router.serve", "serve a model over the TGI protocol with QoS tiers"),
    "profile": ("niyama.worker.profile", "measure step times on this device for the latency predictor"),
    "simulate": ("niyama.engine.simulate_cli", "replay a trace through a scheduler on a virtual clock"),
    "bench": ("niyama.bench.cli", "benchmarks: `bench engine`, `bench serve`"),
}


def usage() -> str:
    lines = ["usage: niyama <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "`niyama <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"niyama: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
