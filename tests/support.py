"""Test drivers for the worker: random chunked schedules without the real scheduler."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch

from niyama.bench.servers import start_server, stop
from niyama.engine.protocol import SamplingParams
from niyama.qos.kv_blocks import BlockAllocator
from niyama.qos.plan import Chunk, Plan, StepShape
from niyama.worker.kv_cache import size_cache
from niyama.worker.loading import LoadedModel
from niyama.worker.runner import ModelRunner


def tiny_llama(dtype: torch.dtype = torch.float64, seed: int = 0, **overrides):
    """A random Llama small enough to build in-process in a few milliseconds.

    float64 by default: random weights give nearly tied logits, and only
    double precision keeps argmax independent of how a step is batched.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    settings = dict(
        vocab_size=211,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    settings.update(overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**settings)).to(dtype)
    model.generation_config.eos_token_id = None  # random weights: never stop early in comparisons
    return model.eval()


@dataclass
class Job:
    request_id: str
    prompt: list[int]
    max_new_tokens: int
    params: SamplingParams = SamplingParams()
    arrival_step: int = 0


def run_jobs(
    runner: ModelRunner, allocator: BlockAllocator, jobs: list[Job], rng: random.Random, max_chunks_per_step: int = 4
) -> dict[str, list[int]]:
    """Drive ``jobs`` to completion with random chunk sizes and random mixes per step.

    Each step takes every running decode plus prefill chunks of 1..remaining
    tokens from a random subset of the waiting requests; requests join at
    their arrival step and stop at max_new_tokens or an EOS token. Returns
    each request's generated token ids.
    """
    eos = runner.loaded.eos_token_ids
    known: dict[str, int] = {}
    computed: dict[str, int] = {}
    generated: dict[str, list[int]] = {}
    pending = sorted(jobs, key=lambda job: job.arrival_step)
    by_id = {job.request_id: job for job in jobs}
    step = 0
    while pending or known:
        while pending and pending[0].arrival_step <= step:
            job = pending.pop(0)
            runner.add_sequence(job.request_id, job.prompt, job.params)
            known[job.request_id], computed[job.request_id], generated[job.request_id] = len(job.prompt), 0, []
        chunks = []
        prefilling = [rid for rid in known if computed[rid] < len(by_id[rid].prompt)]
        decoding = [rid for rid in known if rid not in prefilling]
        rng.shuffle(prefilling)
        for rid in decoding + prefilling[: rng.randint(0, max_chunks_per_step)]:
            remaining = known[rid] - computed[rid]
            length = remaining if rid in decoding else rng.randint(1, remaining)
            start = computed[rid]
            chunks.append(Chunk(rid, start, length, start + length == known[rid], rid in decoding))
        rng.shuffle(chunks)
        tables = {}
        for chunk in chunks:
            tables[chunk.request_id] = allocator.grow(chunk.request_id, chunk.end)
        result = runner.execute(Plan(tuple(chunks), tables, shape=StepShape.of(chunks)))
        for chunk in chunks:
            computed[chunk.request_id] = chunk.end
        for token in result.tokens:
            generated[token.request_id].append(token.token_id)
            known[token.request_id] += 1
            if len(generated[token.request_id]) == by_id[token.request_id].max_new_tokens or token.token_id in eos:
                del known[token.request_id]
                allocator.free(token.request_id)
                runner.remove_sequence(token.request_id)
        step += 1
    return generated


def reference_greedy(model, prompt: list[int], max_new_tokens: int, **generate_options) -> list[int]:
    """`model.generate`, greedy, one request at a time, with the stock SDPA attention; stops at EOS."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("sdpa")
    try:
        with torch.inference_mode():
            out = model.generate(
                torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=0,
                **generate_options,
            )
    finally:
        model.set_attn_implementation(previous)
    return out[0, len(prompt) :].tolist()


def tiny_loaded(model, max_context: int = 512) -> LoadedModel:
    return LoadedModel(
        model, None, "tiny-random-llama", Path("."), torch.device("cpu"), model.dtype, frozenset(), max_context
    )


def make_runner(loaded: LoadedModel, kv_tokens: int = 4096, block_size: int = 4) -> tuple[ModelRunner, BlockAllocator]:
    spec = size_cache(
        loaded.model.config, loaded.dtype, loaded.device, block_size=block_size, kv_cache_tokens=kv_tokens
    )
    return ModelRunner(loaded, spec), BlockAllocator(spec.num_blocks, spec.block_size)


class BackgroundStream:
    """A long `/generate_stream` read on a thread: its SSE `data:` lines, and an event set at the first one."""

    def __init__(self, url: str, body: dict) -> None:
        self.events: list[str] = []
        self.first_token = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(url, body))
        self.thread.start()

    def _read(self, url: str, body: dict) -> None:
        with httpx.stream("POST", f"{url}/generate_stream", json=body, timeout=120) as answer:
            for line in answer.iter_lines():
                if line.startswith("data:"):
                    self.events.append(line)
                    self.first_token.set()

    def last_event(self, timeout: float = 120.0) -> str:
        """The stream's last event, once it has ended."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the stream did not end"
        return self.events[-1]


def served(args: Sequence[str]) -> Iterator[str]:
    """A module fixture's `niyama serve` with ``args``: its URL; afterwards it must stop cleanly (exit 0)."""
    process, base = start_server(args, timeout=180)
    yield base
    stop(process, grace=60)
    assert process.returncode == 0
