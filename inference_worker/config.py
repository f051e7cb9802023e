"""Engine configuration (built once at the entry point) and the worker's environment variables."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def cache_root() -> Path:
    """Root of loraplane's on-disk cache (`$LORAPLANE_CACHE` or `~/.cache/loraplane`)."""
    return Path(os.environ.get("LORAPLANE_CACHE", Path.home() / ".cache" / "loraplane")).expanduser()


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine needs, with vLLM's names (`LLM(**kwargs)` passes these through).

    `model=None` serves the demo model. `num_kv_blocks` overrides KV sizing (tests use it to force
    preemption); otherwise CUDA sizes the cache from `gpu_memory_utilization` after a warm-up forward and
    CPU uses `cpu_kv_cache_gb`. `async_scheduling` queues a decode step's successor on the device before
    reading the step's tokens (default: on for CUDA).
    """

    model: str | None = None
    tokenizer: str | None = None
    served_model_name: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    max_num_seqs: int = 256
    max_model_len: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float = 0.9
    cpu_kv_cache_gb: float = 1.0
    num_kv_blocks: int | None = None
    block_size: int = 16
    load_format: str = "auto"
    skip_tokenizer_init: bool = False
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    async_scheduling: bool | None = None
    seed: int = 0
    enable_lora: bool = False
    max_loras: int = 4
    max_lora_rank: int = 16
    max_cpu_loras: int | None = None
    lora_dtype: str = "auto"
    lora_target_modules: tuple[str, ...] | None = None
    lora_starvation_steps: int = 32

    def __post_init__(self) -> None:
        if self.load_format not in ("auto", "safetensors", "pt", "dummy"):
            raise ValueError(f"load_format must be auto, safetensors, pt or dummy, got {self.load_format!r}")
        if self.dtype != "auto" and self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be auto or one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        for name in ("max_num_seqs", "block_size", "max_loras", "max_lora_rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lora_target_modules is not None and not isinstance(self.lora_target_modules, tuple):
            targets = self.lora_target_modules
            object.__setattr__(
                self, "lora_target_modules", (targets,) if isinstance(targets, str) else tuple(targets)
            )
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"max_model_len must be >= 1, got {self.max_model_len}")

    @classmethod
    def from_kwargs(cls, **kwargs) -> EngineConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"unknown engine options: {unknown}; known: {sorted(names)}")
        return cls(**kwargs)

    def uses_async_scheduling(self, device: torch.device) -> bool:
        """`async_scheduling=None` (auto): on for CUDA, where host work can overlap the GPU; off on CPU."""
        return device.type == "cuda" if self.async_scheduling is None else self.async_scheduling

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def torch_dtype(self, hf_config, device: torch.device) -> torch.dtype:
        """`auto`: fp32 on CPU; on CUDA the checkpoint's half type, else bf16."""
        if self.dtype != "auto":
            return _DTYPES[self.dtype]
        if device.type == "cpu":
            return torch.float32
        dtype = getattr(hf_config, "dtype", None) or getattr(hf_config, "torch_dtype", None)
        return dtype if dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
