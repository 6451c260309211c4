"""One replica over several GPUs of one host: accelerate's balanced placement, layer by layer.

A model too big for one GPU is split by whole decoder layers over the GPUs
(transformers `device_map="balanced"`, capped by each GPU's free memory);
each layer's KV cache lives on that layer's GPU, and each layer's attention
reads the step's layout copied once to its GPU. Layers run one after the
other, each on its GPU: this is placement, not tensor parallelism, so a
spread replica is about as fast as one GPU holding the whole model (plus the
hops between GPUs); it exists to serve a model that does not fit one GPU.
"""

from __future__ import annotations

import torch


class PlacementError(ValueError):
    """The GPUs asked for are not there."""


def spread_placement(gpus: int) -> dict[str, object]:
    """`from_pretrained` keyword arguments that balance the model over GPUs 0..gpus-1."""
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available < gpus:
        raise PlacementError(
            f"a replica over {gpus} GPUs needs {gpus} visible CUDA devices; this process sees {available}"
        )
    return {"device_map": "balanced", "max_memory": {i: torch.cuda.mem_get_info(i)[0] for i in range(gpus)}}


def layer_devices(model: torch.nn.Module) -> tuple[torch.device, ...]:
    """The device of each decoder layer's attention, in layer order (where its KV cache must live)."""
    found: dict[int, torch.device] = {}
    for module in model.modules():
        index = getattr(module, "layer_idx", None)
        if isinstance(index, int) and index not in found:
            parameter = next(module.parameters(), None)
            if parameter is not None:
                found[index] = parameter.device
    return tuple(found[i] for i in sorted(found))
