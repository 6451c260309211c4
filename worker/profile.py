"""`niyama profile`: time real steps over a grid of step shapes on this device.

The latency predictor is fitted on what this writes, so the scheduler's idea
of "how long will this step take" comes from the model and hardware that
will actually run it. Contents of the KV cache do not change a step's time,
only its shape does, so every decode of a shape shares one block table and
the profile needs a cache of only a few thousand tokens.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import logging
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from niyama.engine.protocol import GrammarSpec
from niyama.qos.kv_blocks import blocks_for
from niyama.qos.plan import Chunk, Plan, StepShape

from .kv_cache import size_cache
from .loading import LoadedModel, ModelLoadError, cache_root, load_model
from .runner import ModelRunner
from .sampling import SamplingParams

log = logging.getLogger("niyama.profile")


@dataclass(frozen=True)
class ProfileGrid:
    prefill_tokens: tuple[int, ...]
    decodes: tuple[int, ...]
    contexts: tuple[int, ...]
    repeats: int
    name: str = "custom"


# What a profile masks its constrained decodes with: a tool call's arguments, a typical structured output.
PROFILE_GRAMMAR = GrammarSpec("json", json.dumps({
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]},
                                     "days": {"type": "integer", "minimum": 1, "maximum": 14}},
    "required": ["city", "unit", "days"],
}))  # fmt: skip

# Quick: under three minutes on a 2-core CPU with the default model.
QUICK = ProfileGrid((0, 16, 64, 256, 512, 1024), (0, 1, 8, 32), (256, 2048), repeats=2, name="quick")
FULL = ProfileGrid((0, 16, 64, 128, 256, 512, 1024, 2048), (0, 1, 4, 16, 32, 64, 128, 256), (128, 512, 2048, 8192), 3,
                   name="full")  # fmt: skip
# What `niyama serve` measures on a first start when given no profile: a quarter of the quick grid's
# time (under a minute on a 2-core CPU), since the predictor keeps refining itself from real steps.
STARTUP = ProfileGrid((0, 32, 256, 1024), (0, 1, 16), (256, 1024), repeats=1, name="startup")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} cpu x{torch.get_num_threads()} threads"


def shapes(grid: ProfileGrid, max_context: int) -> list[tuple[int, int, int]]:
    """(prefill tokens, decodes, context) for every grid point the model's context allows."""
    points = itertools.product(grid.prefill_tokens, grid.decodes, grid.contexts)
    return [(p, d, c) for p, d, c in points if (p or d) and max(p, c) < max_context]


def time_step(runner: ModelRunner, prefill: int, decodes: int, context: int, repeats: int) -> tuple[StepShape, float]:
    """Median seconds of a step with ``decodes`` decodes at ``context`` and one ``prefill``-token chunk."""
    block_size = runner.spec.block_size
    decode_table = tuple(range(blocks_for(context, block_size)))
    prefill_end = max(prefill, context)
    prefill_table = tuple(range(len(decode_table), len(decode_table) + blocks_for(prefill_end, block_size)))
    chunks = [Chunk(f"d{i}", context - 1, 1, True, True) for i in range(decodes)]
    tables = dict.fromkeys((chunk.request_id for chunk in chunks), decode_table)
    if prefill:
        chunks.append(Chunk("p", prefill_end - prefill, prefill, True))
        tables["p"] = prefill_table
    plan = Plan(tuple(chunks), tables, shape=StepShape.of(chunks))
    lengths = {chunk.request_id: chunk.end for chunk in chunks}
    seconds = []
    for _ in range(repeats):
        for rid, length in lengths.items():
            runner.remove_sequence(rid)
            runner.add_sequence(rid, [(7 * i + 11) % runner.vocab_size for i in range(length)], SamplingParams())
        seconds.append(runner.execute(plan).seconds)
    for rid in lengths:
        runner.remove_sequence(rid)
    return plan.shape, statistics.median(seconds)


def decode_seconds(runner: ModelRunner, params: SamplingParams, decodes: int, context: int, steps: int) -> float:
    """Median seconds of ``steps`` consecutive decode steps of ``decodes`` requests, each choosing with ``params``."""
    table = tuple(range(blocks_for(context + steps, runner.spec.block_size)))
    rids = [f"g{i}" for i in range(decodes)]
    for rid in rids:
        runner.add_sequence(rid, [(7 * i + 11) % runner.vocab_size for i in range(context)], params)
    seconds = []
    for step in range(steps):
        chunks = tuple(Chunk(rid, context + step - 1, 1, True, True) for rid in rids)
        seconds.append(runner.execute(Plan(chunks, dict.fromkeys(rids, table), shape=StepShape.of(chunks))).seconds)
    for rid in rids:
        runner.remove_sequence(rid)
    return statistics.median(seconds)


def constrained_row_seconds(runner: ModelRunner, decodes: int = 8, context: int = 128, steps: int = 24) -> float:
    """A grammar-masked row's added step time: the same decodes with and without `PROFILE_GRAMMAR`, per row."""
    plain = decode_seconds(runner, SamplingParams(), decodes, context, steps)
    masked = decode_seconds(runner, SamplingParams(grammar=PROFILE_GRAMMAR), decodes, context, steps)
    return max(0.0, (masked - plain) / decodes)


def run_profile(loaded: LoadedModel, grid: ProfileGrid, progress: bool = True) -> dict:
    points = shapes(grid, loaded.max_context)
    longest = max(max(p, c) for p, _, c in points)
    spec = size_cache(
        loaded.model.config, loaded.dtype, loaded.device, kv_cache_tokens=2 * longest + 64,
        layer_devices=loaded.layer_devices,
    )  # fmt: skip
    runner = ModelRunner(loaded, spec)
    time_step(runner, min(grid.prefill_tokens[1:] or (1,)), 1, min(grid.contexts), 1)  # warm-up
    samples = []
    for prefill, decodes, context in tqdm(points, desc="profiling step shapes", disable=not progress):
        shape, seconds = time_step(runner, prefill, decodes, context, grid.repeats)
        samples.append(
            {
                "prefill_tokens": shape.prefill_tokens,
                "decode_tokens": shape.decode_tokens,
                "decode_context": shape.decode_context,
                "prefill_context": shape.prefill_context,
                "seconds": seconds,
            }
        )
    extra = {}
    if loaded.tokenizer is not None and min(grid.contexts) + 32 < loaded.max_context:
        extra["seconds_per_constrained_row"] = constrained_row_seconds(runner, context=min(grid.contexts))
    return {
        "model": loaded.model_id,
        "device": device_name(loaded.device),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "grid": grid.name,
        "samples": samples,
        **extra,
    }


def profile_path(loaded: LoadedModel) -> Path:
    dtype = str(loaded.dtype).removeprefix("torch.")
    key = f"{loaded.path.name}-{device_name(loaded.device)}-{dtype}"
    return cache_root() / "profiles" / (re.sub(r"[^A-Za-z0-9_.-]+", "_", key) + ".json")


def cached_profile(loaded: LoadedModel) -> Path:
    """The start-up profile of this model on this device: measured on first use, then read from the cache."""
    path = profile_path(loaded)
    if path.is_file():
        log.info("latency profile: %s (cached)", path)
        return path
    log.info("no latency profile for this model and device yet: profiling now (%d step shapes), once",
             len(shapes(STARTUP, loaded.max_context)))  # fmt: skip
    started = time.monotonic()
    profile = run_profile(loaded, STARTUP, progress=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(f".{os.getpid()}.tmp")
    staging.write_text(json.dumps(profile, indent=1) + "\n")
    staging.replace(path)
    log.info("profiled %d step shapes in %.0f s; cached in %s", len(profile["samples"]),
             time.monotonic() - started, path)  # fmt: skip
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="niyama profile", description=__doc__.splitlines()[0])
    parser.add_argument("--model-id", default=None, help="local folder, cached hub id or .gguf (default: embedded)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--out", required=True, type=Path, help="where to write the profile JSON")
    parser.add_argument("--full", action="store_true", help="the full grid (default: quick, minutes on a CPU)")
    args = parser.parse_args(argv)
    try:
        loaded = load_model(args.model_id, device=args.device, dtype=args.dtype)
    except ModelLoadError as error:
        print(f"niyama profile: {error}", file=sys.stderr)
        return 2
    profile = run_profile(loaded, FULL if args.full else QUICK)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(profile, indent=1) + "\n")
    print(f"wrote {len(profile['samples'])} step timings for {profile['model']} on {profile['device']} to {args.out}")
    return 0
