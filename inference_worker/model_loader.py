"""Find a model (local dir, GGUF file, hub id, the demo), build it and load its weights."""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path

import torch
from loraplane.inference_worker.config import EngineConfig, cache_root
from loraplane.inference_worker.errors import ModelLoadError
from loraplane.inference_worker.layers.cpu_layout import pack_linear_weights
from loraplane.inference_worker.models import model_class_for
from torch import nn
from transformers import AutoConfig

logger = logging.getLogger(__name__)

_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt")


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
        return _converted_gguf(path)
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise ModelLoadError(f"{model}: no such model folder, GGUF file or hub id")
    return _from_hub(model)


def _converted_gguf(path: Path) -> str:
    from loraplane.inference_worker.gguf import convert_gguf, is_converted

    target = cache_root() / "models" / path.stem
    if not is_converted(target):
        convert_gguf(path, target)
    return str(target)


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


def load_hf_config(path: str):
    try:
        return AutoConfig.from_pretrained(path)
    except Exception as exc:
        raise ModelLoadError(f"{path}: cannot read its config.json: {exc}") from exc


def build_model(
    config: EngineConfig, hf_config, path: str, device: torch.device, dtype: torch.dtype, max_positions: int
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
    from safetensors import safe_open

    for file in files:
        if file.endswith(".safetensors"):
            with safe_open(file, framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 - safe_open is not iterable
                    yield name, f.get_tensor(name)
        else:
            yield from torch.load(file, map_location="cpu", weights_only=True).items()


def _load_checkpoint(model: nn.Module, path: str) -> None:
    loaded = model.load_weights(_iter_weights(checkpoint_files(path)))
    params = {n for n, _ in model.named_parameters()}
    missing = sorted(params - loaded)
    if missing:
        raise ModelLoadError(f"{path}: checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")
    logger.info("loaded %d tensors from %s", len(loaded), path)
