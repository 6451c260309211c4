"""`niyama bench <name>`: each benchmark is a module with `main(argv) -> int`.

Each runs with SIGTERM turned into a normal exit, so a benchmark that is
stopped still stops every server and worker it started.
"""

from __future__ import annotations

import importlib
import sys

from .servers import sigterm_exits

BENCHMARKS = {
    "engine": ("niyama.bench.engine", "engine throughput vs model.generate and generate_batch (in-process)"),
    "serve": ("niyama.bench.serve_cli", "tier-aware load against a TGI/OpenAI server: SLO attainment, goodput"),
    "router-overhead": ("niyama.bench.router_overhead", "HTTP layer cost per streamed token, with a null worker"),
    "loop-lag": ("niyama.bench.loop_lag", "event-loop lag during long prefills, /health round trip, per-step IPC"),
    "grammar": ("niyama.bench.grammar", "JSON-schema requests vs the same unconstrained, side by side: tokens/s"),
    "threads": ("niyama.bench.threads", "step time per torch thread count: shared vs siloed cores (in-process)"),
    "replica-routing": ("niyama.bench.replica_routing", "slack-aware vs round-robin routing over replicas, simulated"),
    "qos-truth": ("niyama.bench.qos_truth", "simulated goodput of niyama, edf, fcfs under prediction error (truth)"),
    "prefix": ("niyama.bench.prefix", "multi-turn chats, prefix cache on vs off: TTFT, exact outputs (in-process)"),
    "prefix-sim": ("niyama.bench.prefix_sim", "simulated prefix-cache gain on chats; tier-aware vs LRU retention"),
    "emulated": ("niyama.bench.evaluate_emulated", "fcfs, edf, niyama served on an emulated A100, beside simulation"),
    "prefill": ("niyama.bench.prefill", "chunked prefill and long-context decode vs one forward pass (in-process)"),
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHMARKS:
        lines = ["usage: niyama bench <name> [options]", "", "benchmarks:"]
        lines += [f"  {name:<16} {summary}" for name, (_, summary) in BENCHMARKS.items()]
        known = not argv or argv[0] in ("-h", "--help")
        print("\n".join(lines), file=sys.stdout if known else sys.stderr)
        return 0 if known else 2
    with sigterm_exits():
        return int(importlib.import_module(BENCHMARKS[argv[0]][0]).main(argv[1:]) or 0)
