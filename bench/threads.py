"""`niyama bench threads`: how much one step gains from more torch threads on this CPU.

A siloed deployment splits the cores between servers (each with as many
torch threads as cores), a shared server gives one process every core. Which
one serves more depends on how well a single step uses extra threads: if two
threads make a step only a little faster than one, two one-core servers do
almost twice the steps of one two-core server. This times the step shapes a
QoS evaluation sees, in one process, at each thread count in turn (rounds
alternate, medians count), and reports the speedup ``t(1) / t(n)`` and the capacity ratio ``t(1) / (n t(n))``:
the steps per second of servers with ``n`` threads each against those of as
many cores run as one-thread servers (``n`` = all cores: a shared server
against a silo per core), if steps of that shape were all there was.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch

from niyama.worker.kv_cache import size_cache
from niyama.worker.loading import load_model
from niyama.worker.profile import time_step
from niyama.worker.runner import ModelRunner

# (prefill tokens, decodes, context): decode-only batches and prefill chunks mixed with decodes.
SHAPES = ((0, 1, 128), (0, 8, 128), (0, 32, 128), (64, 8, 128), (256, 0, 256), (256, 8, 256), (512, 0, 512))


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        prefill, decodes, context = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is PREFILL:DECODES:CONTEXT, not {text!r}") from None
    return prefill, decodes, context


def measure(runner: ModelRunner, shapes, thread_counts, rounds: int) -> list[dict]:
    """Median step seconds per shape and thread count; thread counts alternate within every round."""
    seconds: dict[tuple, list[float]] = {}
    for round_index in range(rounds):
        order = thread_counts if round_index % 2 == 0 else thread_counts[::-1]
        for threads in order:
            torch.set_num_threads(threads)
            for prefill, decodes, context in shapes:
                _, step = time_step(runner, prefill, decodes, context, repeats=3)
                seconds.setdefault((prefill, decodes, context, threads), []).append(step)
    rows = []
    for prefill, decodes, context in shapes:
        times = {n: statistics.median(seconds[(prefill, decodes, context, n)]) for n in thread_counts}
        one = times[thread_counts[0]]
        rows.append({
            "prefill_tokens": prefill, "decodes": decodes, "context": context,
            "seconds": {str(n): round(t, 4) for n, t in times.items()},
            "speedup": {str(n): round(one / t, 3) for n, t in times.items()},
            "capacity_vs_one_thread_per_core": {str(n): round(one / t / n, 3) for n, t in times.items()},
        })  # fmt: skip
    return rows


def table(rows: list[dict], thread_counts: list[int]) -> str:
    head = ["prefill", "decodes", "context"]
    head += [f"{n} thr s" for n in thread_counts] + [f"speedup x{n}" for n in thread_counts[1:]]
    head += [f"capacity x{n}" for n in thread_counts[1:]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["prefill_tokens"], row["decodes"], row["context"]]
        cells += [row["seconds"][str(n)] for n in thread_counts]
        cells += [row["speedup"][str(n)] for n in thread_counts[1:]]
        cells += [row["capacity_vs_one_thread_per_core"][str(n)] for n in thread_counts[1:]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(prog="niyama bench threads", description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=parse_shape, action="append", dest="shapes",
                        help="PREFILL:DECODES:CONTEXT (repeatable; default: shapes a QoS evaluation sees)")  # fmt: skip
    parser.add_argument("--threads", type=int, nargs="+", default=[1, cores], help="thread counts, the first the base")
    parser.add_argument("--rounds", type=int, default=4, help="rounds over every thread count; medians count")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.threads) or args.rounds < 1:
        parser.error("thread counts and --rounds must be at least 1")
    shapes = args.shapes or list(SHAPES)
    loaded = load_model()
    longest = max(max(p, c) for p, _, c in shapes)
    runner = ModelRunner(
        loaded, size_cache(loaded.model.config, loaded.dtype, loaded.device, kv_cache_tokens=2 * longest + 64)
    )
    time_step(runner, *shapes[0], repeats=1)  # warm-up
    rows = measure(runner, shapes, args.threads, args.rounds)
    print(f"{loaded.model_id}, {cores} cores, median of {args.rounds} rounds x 3 steps\n")
    print(table(rows, args.threads))
    if args.json:
        args.json.write_text(json.dumps({"cores": cores, "threads": args.threads, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
