"""`niyama bench prefill`: chunked prefill and long-context decode through the worker vs one forward pass.

Side by side in one run, on the same model and prompts:
- forward: one forward pass over the whole prompt, ``model(ids, logits_to_keep=1)`` with SDPA, the floor;
- chunked: the same prompt prefilled through the engine core (scheduler + worker) until its first token,
  with fixed steps of each ``--chunks`` size (fcfs) and with Niyama's dynamic step sizes;
- decode: one worker step of ``--decode-batch`` decodes at ``--decode-context`` tokens of context against
  transformers' own decode step (its default `DynamicCache`, and a `StaticCache`) at the same batch and context.
Each figure is the median of ``--repeats`` runs, in alternating order, with the spread (min..max); the
ratios divide medians. ``--random-weights`` builds the model from its config with random weights and room
for the longest prompt (timing does not depend on the weights), e.g. for 8k prompts on a 8192-token model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM, DynamicCache, StaticCache

from niyama.engine.core import EngineCore
from niyama.engine.protocol import SamplingParams
from niyama.engine.request import GenerationRequest
from niyama.qos.config import builtin_tier_config
from niyama.qos.kv_blocks import BlockAllocator
from niyama.qos.plan import Chunk, Plan, StepShape
from niyama.qos.predictor import LatencyPredictor
from niyama.qos.scheduler import make_scheduler
from niyama.worker.loading import LoadedModel, load_model

from .engine import attention, make_runner
from .prompts import prompt_token_ids

DYNAMIC = "dynamic"


def forward_seconds(loaded: LoadedModel, prompt: list[int]) -> float:
    ids = torch.tensor([prompt], device=loaded.device)
    with torch.inference_mode(), attention(loaded.model, "sdpa"):
        started = time.perf_counter()
        loaded.model(ids, logits_to_keep=1)
        return time.perf_counter() - started


def chunked_seconds(loaded: LoadedModel, prompt: list[int], chunk: str, predictor: str) -> tuple[float, list[int]]:
    """Seconds from submitting ``prompt`` to its first token through the engine core, and the steps' sizes."""
    runner = make_runner(loaded, len(prompt) + 64)
    allocator = BlockAllocator(runner.spec.num_blocks, runner.spec.block_size)
    options = {} if chunk == DYNAMIC else {"token_budget": int(chunk)}
    policy = "niyama" if chunk == DYNAMIC else "fcfs"
    scheduler = make_scheduler(
        policy, builtin_tier_config("default"), allocator, LatencyPredictor.load(predictor), **options
    )
    core = EngineCore(scheduler, runner, loaded.eos_token_ids, time.monotonic)
    sizes = []
    started = time.perf_counter()
    core.add(GenerationRequest.of(prompt, SamplingParams(), 1, "interactive").submitted("p", time.monotonic()))
    while core.has_work:
        plan, outputs = core.prepare()
        if outputs.failed:
            raise RuntimeError(f"engine step failed: {outputs.failed}")
        if not plan.is_empty:
            sizes.append(plan.shape.total_tokens)
            core.complete(runner.execute(plan))
    seconds = time.perf_counter() - started
    loaded.model.set_attn_implementation("sdpa")
    return seconds, sizes


def worker_decode_seconds(loaded: LoadedModel, batch: int, context: int, steps: int) -> float:
    """Median worker step of ``batch`` decodes at ``context``, blocks allocated as the scheduler would.

    Each request's prompt blocks are taken at once (a prefill), then every request grows one block at a
    time as it decodes, so the tables end in interleaved blocks, as in a server. The cache contents do not
    change the time, so no prefill runs.
    """
    runner = make_runner(loaded, batch * (context + steps + 32))
    allocator = BlockAllocator(runner.spec.num_blocks, runner.spec.block_size)
    rids = [f"d{i}" for i in range(batch)]
    for rid in rids:
        runner.add_sequence(rid, [(7 * i + 11) % runner.vocab_size for i in range(context)], SamplingParams())
        allocator.grow(rid, context - 1)
    seconds = []
    for step in range(steps):
        chunks = tuple(Chunk(rid, context - 1 + step, 1, True, True) for rid in rids)
        tables = {rid: allocator.grow(rid, context + step) for rid in rids}
        seconds.append(runner.execute(Plan(chunks, tables, shape=StepShape.of(chunks))).seconds)
    loaded.model.set_attn_implementation("sdpa")
    return statistics.median(seconds[1:])


def transformers_decode_seconds(loaded: LoadedModel, batch: int, context: int, steps: int, static: bool) -> float:
    """Median decode step of transformers with its own cache holding ``context`` positions per row."""
    model, config = loaded.model, loaded.model.config
    shape = (batch, config.num_key_value_heads, context - 1, config.hidden_size // config.num_attention_heads)
    shape = (*shape[:3], getattr(config, "head_dim", None) or shape[3])
    if static:
        cache = StaticCache(config=config, max_cache_len=context + steps)
    else:
        cache = DynamicCache(config=config)
    for layer in range(config.num_hidden_layers):
        keys, values = torch.randn(shape, dtype=loaded.dtype), torch.randn(shape, dtype=loaded.dtype)
        cache.update(keys, values, layer, {"cache_position": torch.arange(context - 1)})
    ids = torch.full((batch, 1), 11, device=loaded.device)
    seconds = []
    with torch.inference_mode(), attention(model, "sdpa"):
        for step in range(steps):
            position = context - 1 + step
            mask = torch.ones(batch, position + 1, dtype=torch.long) if not static else None
            started = time.perf_counter()
            model(ids, cache=cache, attention_mask=mask, cache_position=torch.tensor([position]),
                  position_ids=torch.full((batch, 1), position), logits_to_keep=1)  # fmt: skip
            seconds.append(time.perf_counter() - started)
    return statistics.median(seconds[1:])


def with_random_weights(loaded: LoadedModel, context: int) -> LoadedModel:
    config = loaded.model.config
    config.max_position_embeddings = max(config.max_position_embeddings, context)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype, attn_implementation="sdpa").eval()
    return dataclasses.replace(loaded, model=model.to(loaded.device), max_context=config.max_position_embeddings)


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="niyama bench prefill", description=__doc__.splitlines()[0])
    parser.add_argument("--model-id", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--lengths", default="1024,4096", help="prompt lengths in tokens, comma-separated")
    parser.add_argument("--chunks", default=f"128,512,{DYNAMIC}", help=f"step sizes, and/or {DYNAMIC!r}")
    parser.add_argument("--predictor", default="a100-llama3-8b", help="the dynamic scheduler's latency model")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--decode-batch", type=int, default=8, help="0: no decode comparison")
    parser.add_argument("--decode-context", type=int, default=4096)
    parser.add_argument("--decode-steps", type=int, default=6)
    parser.add_argument("--random-weights", action="store_true", help="random weights, context for the longest prompt")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    lengths = [int(n) for n in args.lengths.split(",")]
    chunk_modes = args.chunks.split(",")
    loaded = load_model(args.model_id, device=args.device, dtype=args.dtype)
    if args.random_weights:
        loaded = with_random_weights(loaded, max(lengths + [args.decode_context]) + 64)
    prompts = dict(zip(lengths, prompt_token_ids(loaded.tokenizer, lengths)))
    forward_seconds(loaded, prompts[min(lengths)])  # warm-up: the first pass pays one-off allocations
    times: dict[str, dict[str, list[float]]] = {str(n): {"forward": []} | {c: [] for c in chunk_modes} for n in lengths}
    sizes: dict[str, dict[str, list[int]]] = {str(n): {} for n in lengths}
    for repeat in range(args.repeats):
        for length, prompt in prompts.items():
            order = ["forward", *chunk_modes]
            for mode in order if repeat % 2 == 0 else reversed(order):
                if mode == "forward":
                    seconds = forward_seconds(loaded, prompt)
                else:
                    seconds, sizes[str(length)][mode] = chunked_seconds(loaded, prompt, mode, args.predictor)
                times[str(length)][mode].append(seconds)
                print(f"repeat {repeat + 1} {length} tokens {mode}: {seconds:.2f} s", file=sys.stderr)
    prefill = {
        length: {
            mode: summary(values)
            | (
                {}
                if mode == "forward"
                else {
                    "ratio": statistics.median(values) / statistics.median(by_mode["forward"]),
                    "step_sizes": sorted(set(sizes[length][mode])),
                    "steps": len(sizes[length][mode]),
                }
            )  # fmt: skip
            for mode, values in by_mode.items()
        }
        for length, by_mode in times.items()
    }
    report = {
        "model": loaded.model_id + (" (random weights)" if args.random_weights else ""),
        "device": str(loaded.device),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "prefill_seconds": prefill,
    }
    if args.decode_batch:
        batch, context, steps = args.decode_batch, args.decode_context, args.decode_steps
        decode: dict[str, list[float]] = {"niyama": [], "dynamic_cache": [], "static_cache": []}
        for _ in range(args.repeats):
            decode["niyama"].append(worker_decode_seconds(loaded, batch, context, steps))
            decode["dynamic_cache"].append(transformers_decode_seconds(loaded, batch, context, steps, False))
            decode["static_cache"].append(transformers_decode_seconds(loaded, batch, context, steps, True))
        ours = statistics.median(decode["niyama"])
        report["decode_step_seconds"] = {"batch": batch, "context": context} | {
            name: summary(values) | {"ratio": ours / statistics.median(values)} if name != "niyama" else summary(values)
            for name, values in decode.items()
        }
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"model {report['model']} on {report['device']} ({report['dtype']}, {report['threads']} threads)")
    print("prefill: median seconds (min..max) and ratio to one forward pass")
    for length, by_mode in prefill.items():
        for mode, figures in by_mode.items():
            spread = f"({figures['min']:.2f}..{figures['max']:.2f})"
            line = f"  {length:>6} tokens {mode:<8} {figures['median']:8.2f} s {spread}"
            if mode != "forward":
                line += f"  {figures['ratio']:.2f}x  {figures['steps']} steps of {figures['step_sizes']}"
            print(line)
    if args.decode_batch:
        figures = report["decode_step_seconds"]
        print(f"decode step, {figures['batch']} requests at {figures['context']} tokens of context")
        for name in ("niyama", "dynamic_cache", "static_cache"):
            row = figures[name]
            line = f"  {name:<14} {row['median'] * 1000:8.1f} ms ({row['min'] * 1000:.1f}..{row['max'] * 1000:.1f})"
            print(line + (f"  niyama / this {row['ratio']:.2f}x" if "ratio" in row else ""))
    return 0
