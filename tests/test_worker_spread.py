"""One replica over several devices: per-layer KV placement and sizing, and exact tokens across devices.

The sizing and placement bookkeeping run anywhere; the step itself needs a
CUDA device, on which the tiny model is split between the GPU and the CPU
(the same code path as a model balanced over several GPUs).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from support import Job, reference_greedy, run_jobs, tiny_llama

from niyama.qos.kv_blocks import BlockAllocator
from niyama.worker import kv_cache
from niyama.worker.kv_cache import size_cache
from niyama.worker.loading import LoadedModel
from niyama.worker.placement import layer_devices
from niyama.worker.runner import ModelRunner

GPU0, GPU1 = torch.device("cuda", 0), torch.device("cuda", 1)


def test_the_device_with_the_least_room_per_token_sizes_a_spread_cache(monkeypatch):
    model = tiny_llama(num_hidden_layers=3)
    free = {GPU0: 6 << 20, GPU1: 5 << 20}
    monkeypatch.setattr(kv_cache, "free_memory_bytes", lambda device: free[device])
    spec = size_cache(model.config, torch.float16, GPU0, block_size=16, memory_fraction=1.0,
                      layer_devices=(GPU0, GPU0, GPU1))  # fmt: skip
    per_layer_block = spec.bytes_per_token_layer * 16  # 2 x 2 kv heads x 16 dims x 2 bytes x 16 tokens
    assert spec.num_blocks == min((6 << 20) // (2 * per_layer_block), (5 << 20) // per_layer_block)
    assert [spec.layer_device(i) for i in range(3)] == [GPU0, GPU0, GPU1]


def test_layer_devices_follow_the_attention_modules():
    assert layer_devices(tiny_llama(num_hidden_layers=3)) == (torch.device("cpu"),) * 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_model_split_between_gpu_and_cpu_gives_generates_tokens():
    from accelerate import dispatch_model

    reference = tiny_llama()
    split = dispatch_model(
        tiny_llama(),
        device_map={"model.embed_tokens": 0, "model.rotary_emb": 0, "model.layers.0": 0, "model.layers.1": "cpu",
                    "model.norm": "cpu", "lm_head": "cpu"},
    )  # fmt: skip
    devices = layer_devices(split)
    assert devices == (GPU0, torch.device("cpu"))
    loaded = LoadedModel(split, None, "tiny", Path("."), GPU0, torch.float64, frozenset(), 512, devices)
    spec = size_cache(split.config, torch.float64, GPU0, block_size=4, kv_cache_tokens=4096, layer_devices=devices)
    runner = ModelRunner(loaded, spec)
    rng = random.Random(5)
    jobs = [
        Job(f"r{i}", [rng.randrange(3, 211) for _ in range(rng.randint(3, 40))], 8, arrival_step=i) for i in range(5)
    ]
    outputs = run_jobs(runner, BlockAllocator(spec.num_blocks, spec.block_size), jobs, rng)
    assert {job.request_id: reference_greedy(reference, job.prompt, 8) for job in jobs} == outputs
