"""Find a model (local dir, GGUF file, hub id, the demo), build it and load its weights.

`load_model(config)` is the engine's one loader call: it resolves the model's folder, reads its HF config,
picks the device and dtype, loads the tokenizer and builds the model with its weights, and hands back a
`LoadedModel`. Everything that reads disk or a hub for the base model lives here, not in the engine.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoTokenizer,
    GenerationConfig,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

from loraplane.inference_worker.config import CPU_MAX_MODEL_LEN, DTYPE_ALIASES, EngineConfig
from loraplane.inference_worker.errors import ModelLoadError
from loraplane.inference_worker.layers.cpu_layout import (
    bf16_supported,
    pack_linear_weights,
    release_packed_dense_weights,
    return_freed_memory,
)
from loraplane.inference_worker.models import model_class_for

logger = logging.getLogger(__name__)

_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt")


@dataclass(frozen=True)
class LoadedModel:
    """A base model ready to serve: what `LLMEngine` is built from.

    Semantics: `path` is the local folder holding config.json (and, unless `load_format=dummy`, the
    weights); `name` is what requests call it (`served_model_name`, else the `model` argument);
    `tokenizer` is None with `skip_tokenizer_init`; `max_model_len` is the configured limit checked
    against the model's positions (and sliding window); `eos_token_ids` merges the HF config's, the
    tokenizer's and generation_config.json's end-of-sequence ids.
    """

    path: str
    name: str
    hf_config: PretrainedConfig
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase | None
    device: torch.device
    dtype: torch.dtype
    max_model_len: int
    eos_token_ids: set[int]


def load_model(config: EngineConfig) -> LoadedModel:
    """Resolve, check and load everything about the base model that `config` names.

    The cheap checks come first (a folder without weights, a max_model_len beyond the model's limit) so
    a bad value fails before the slow steps (tokenizer, weights).
    """
    with phase("model files found"):
        path = resolve_model_path(config.model)
        hf_config = load_hf_config(path)
        if config.load_format != "dummy":
            checkpoint_files(path)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, hf_config, device)
    max_model_len = resolve_max_model_len(config.max_model_len, hf_config, device)
    with phase("tokenizer loaded"):
        tokenizer = None if config.skip_tokenizer_init else load_tokenizer(config.tokenizer or path)
    with phase(f"model built ({dtype}, {device})"):
        model = build_model(config, hf_config, path, device, dtype, max_model_len)
    return LoadedModel(
        path=path,
        name=config.served_model_name or _default_name(config.model),
        hf_config=hf_config,
        model=model,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        max_model_len=max_model_len,
        eos_token_ids=eos_token_ids(hf_config, tokenizer, path),
    )


def resolve_device(device: str) -> torch.device:
    """`auto`: CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextlib.contextmanager
def phase(done: str):
    """Log `model: <done> in N s` when the block finishes (one line per start-up phase)."""
    started = time.monotonic()
    yield
    logger.info("model: %s in %.1f s", done, time.monotonic() - started)


def resolve_dtype(dtype: str, hf_config: PretrainedConfig, device: torch.device) -> torch.dtype:
    """`auto`: on CPU bf16 where oneDNN has bf16 kernels (AVX512-BF16/AMX: faster than fp32 there, see
    benchmarks/cpu_dtype.py), else fp32; on CUDA the checkpoint's half type, else bf16. Other names:
    `DTYPE_ALIASES`."""
    if dtype != "auto":
        return getattr(torch, DTYPE_ALIASES[dtype])
    if device.type == "cpu":
        return torch.bfloat16 if bf16_supported() else torch.float32
    checkpoint = getattr(hf_config, "dtype", None) or getattr(hf_config, "torch_dtype", None)
    return checkpoint if checkpoint in (torch.float16, torch.bfloat16) else torch.bfloat16


def resolve_max_model_len(
    max_model_len: int | None, hf_config: PretrainedConfig, device: torch.device | None = None
) -> int:
    """The configured context length, or the model's (its positions, capped by a sliding window; on CPU
    also by `CPU_MAX_MODEL_LEN`, since the CPU KV cache holds max_num_seqs sequences of this length)."""
    limit = getattr(hf_config, "max_position_embeddings", None) or 4096
    window = getattr(hf_config, "sliding_window", None)
    if window and getattr(hf_config, "use_sliding_window", True):
        limit = min(limit, window)
    if max_model_len is None:
        return min(limit, CPU_MAX_MODEL_LEN) if device is not None and device.type == "cpu" else limit
    if max_model_len > limit:
        raise ModelLoadError(f"max_model_len={max_model_len} exceeds the model's limit of {limit} positions")
    return max_model_len


def load_hf_config(path: str) -> PretrainedConfig:
    return _from_pretrained(AutoConfig, path, "cannot read its config.json")


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    return _from_pretrained(AutoTokenizer, path, "cannot load its tokenizer")


def _from_pretrained(auto_class: type, path: str, failure: str):
    try:
        return auto_class.from_pretrained(path)
    except Exception as exc:
        raise ModelLoadError(f"{path}: {failure}: {exc}") from exc


def eos_token_ids(
    hf_config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase | None, path: str
) -> set[int]:
    ids: set[int] = set()
    candidates = [getattr(hf_config, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)]
    try:
        candidates.append(GenerationConfig.from_pretrained(path).eos_token_id)
    except Exception:
        logger.debug("no generation_config.json in %s", path)
    for c in candidates:
        if isinstance(c, int):
            ids.add(c)
        elif isinstance(c, (list, tuple)):
            ids.update(int(x) for x in c)
    return ids


def _default_name(model: str | None) -> str:
    if model is None:
        from loraplane.inference_worker.demo import DEMO_MODEL_NAME

        return DEMO_MODEL_NAME
    return model


def resolve_model_path(model: str | None) -> str:
    """Local directory holding config.json and weights for `model`.

    Semantics: None -> the demo model; an existing directory -> itself (must hold config.json); a
    `.gguf` file -> converted once to safetensors under the cache; anything else is tried as a hub id
    through huggingface_hub's cache (HF_HUB_OFFLINE is respected).
    """
    if model is None:
        from loraplane.inference_worker.demo import demo_model_path

        return demo_model_path()
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{model}: the folder has no config.json; it does not hold a model")
        return str(path)
    if path.is_file() and path.suffix == ".gguf":
        from loraplane.inference_worker.gguf import converted_gguf

        return converted_gguf(path)
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise ModelLoadError(f"{model}: no such model folder, GGUF file or hub id")
    return _from_hub(model)


def _from_hub(repo_id: str) -> str:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(
            repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]
        )
    except Exception as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "")
        hint = " (HF_HUB_OFFLINE is set: download it first or unset it)" if offline else ""
        raise ModelLoadError(f"{repo_id}: cannot fetch it from the hub{hint}: {exc}") from exc


def build_model(
    config: EngineConfig,
    hf_config: PretrainedConfig,
    path: str,
    device: torch.device,
    dtype: torch.dtype,
    max_positions: int,
) -> nn.Module:
    cls = model_class_for(hf_config)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            model = cls(hf_config, max_positions).to(device)  # .to moves the CPU-built rope tables
    finally:
        torch.set_default_dtype(default_dtype)
    if config.load_format == "dummy":
        _init_dummy(model, config.seed, device)
    else:
        _load_checkpoint(model, path)
    if device.type == "cpu":
        pack_linear_weights(model)
        release_packed_dense_weights(model)
        return_freed_memory()
    return model.eval()


def _init_dummy(model: nn.Module, seed: int, device: torch.device) -> None:
    """Random weights (uniform +-1e-3, norms 1, as vLLM), for benchmarks only."""
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, param in model.named_parameters():
        if "norm" in name:
            param.data.fill_(1.0)
        else:
            param.data.uniform_(-1e-3, 1e-3, generator=gen)


def checkpoint_files(path: str) -> list[str]:
    for pattern in _WEIGHT_PATTERNS:
        files = sorted(f for f in glob.glob(os.path.join(path, pattern)) if "training_args" not in f)
        if files:
            return files
    raise ModelLoadError(f"{path}: no weight files (*.safetensors, *.bin); it does not hold a model")


def _iter_weights(files: list[str]):
    """(name, tensor) over the checkpoint's files, with a progress bar over tensors (bytes for .bin)."""
    from safetensors import safe_open
    from tqdm import tqdm

    with tqdm(desc="loading weights", unit="tensor", disable=None) as progress:
        for file in files:
            if file.endswith(".safetensors"):
                with safe_open(file, framework="pt") as f:
                    names = list(f.keys())
                    progress.total = (progress.total or 0) + len(names)
                    for name in names:
                        yield name, f.get_tensor(name)
                        progress.update()
            else:
                state = torch.load(file, map_location="cpu", weights_only=True)
                progress.total = (progress.total or 0) + len(state)
                for item in state.items():
                    yield item
                    progress.update()


def _load_checkpoint(model: nn.Module, path: str) -> None:
    loaded = model.load_weights(_iter_weights(checkpoint_files(path)))
    params = {n for n, _ in model.named_parameters()}
    missing = sorted(params - loaded)
    if missing:
        raise ModelLoadError(f"{path}: checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")
    logger.info("loaded %d tensors from %s", len(loaded), path)
