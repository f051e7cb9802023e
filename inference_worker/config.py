"""Engine configuration: `EngineConfig`, built once at the entry point and passed down.

Torch-free: the worker's CLI builds and validates an `EngineConfig` before importing the engine, so a
bad value is rejected before any model is loaded or port is bound. The names here become torch types in
`loraplane.inference_worker.model_loader` (`resolve_device`, `resolve_dtype`). The on-disk cache root
(`$LORAPLANE_CACHE`) is read in `loraplane.cache`, shared with the kernels' build cache.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loraplane.inference_worker.lora.config import LoRAConfig

# dtype name (vLLM's spellings) -> the torch dtype attribute it means.
DTYPE_ALIASES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}
LOAD_FORMATS = ("auto", "safetensors", "pt", "dummy")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")

CPU_LONG_PREFILL_TOKENS = 128  # default prefill chunk cap on CPU (EngineConfig.prefill_cap)
# Defaults where the engine runs on the CPU: up to 32 sequences share a KV cache with room for 4 of
# max_model_len tokens (see `kv_cache_tokens`; short requests fit many to that room, and the scheduler
# preempts when it fills, as on a GPU): 4 x 2048 tokens are 180 MiB of bf16 KV for the demo model, and
# `loraplane serve` stays near 1 GB.
CUDA_MAX_NUM_SEQS = 256
CPU_MAX_NUM_SEQS = 32
CPU_KV_FULL_SEQUENCES = 4
CPU_MAX_MODEL_LEN = 2048


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine needs, with vLLM's names (`LLM(**kwargs)` passes these through).

    `model=None` serves the demo model. KV cache size, first that applies: `num_kv_blocks` (tests use it
    to force preemption); `kv_cache_memory` bytes (vLLM's `kv_cache_memory_bytes`, CPU or GPU; on a GPU
    it replaces `gpu_memory_utilization`); `cpu_kv_cache_gb` GiB on CPU; on CUDA the memory left under
    `gpu_memory_utilization` after a warm-up forward; on CPU room for `max_num_seqs` (at most 4) sequences of
    `max_model_len` tokens each. `max_num_seqs=None` means 256 on CUDA and 32 on CPU, and on CPU an unset
    `max_model_len` is the model's capped at 2048 (the device is resolved here for `device="auto"`, which
    imports torch; an explicit device keeps this module torch-free). `async_scheduling` queues a decode
    step's successor on the device before reading the step's tokens (default: on for CUDA).
    `long_prefill_token_threshold` caps one prompt's prefill chunk per step so short requests start while
    a long prompt prefills (vLLM's option; default: 128 tokens on CPU, where a step of thousands of prompt
    tokens takes seconds, no cap on CUDA; 0: no cap). With `enable_lora` the LoRA capacity settings are
    checked here too (`lora_config()`). `batch_invariant` (default: env `LORAPLANE_BATCH_INVARIANT`,
    vLLM's `VLLM_BATCH_INVARIANT`) makes a request's output independent of the rest of its batch
    (`inference_worker/layers/batch_invariant.py`). Every bad value raises ValueError naming the option.
    """

    model: str | None = None
    tokenizer: str | None = None
    served_model_name: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    max_num_seqs: int | None = None
    max_model_len: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float = 0.9
    kv_cache_memory: int | None = None
    cpu_kv_cache_gb: float | None = None
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
    long_prefill_token_threshold: int | None = None
    batch_invariant: bool = field(default_factory=lambda: _env_flag("LORAPLANE_BATCH_INVARIANT"))

    def __post_init__(self) -> None:
        self._check_choices()
        if not isinstance(self.batch_invariant, bool):
            raise ValueError(f"batch_invariant must be True or False, got {self.batch_invariant!r}")
        for name in ("block_size", "max_loras", "max_lora_rank"):
            _require_positive_int(name, getattr(self, name))
        for name in (
            "max_num_seqs",
            "max_model_len",
            "max_num_batched_tokens",
            "num_kv_blocks",
            "kv_cache_memory",
        ):
            if getattr(self, name) is not None:
                _require_positive_int(name, getattr(self, name))
        if self.long_prefill_token_threshold is not None:
            _require_int("long_prefill_token_threshold", self.long_prefill_token_threshold, minimum=0)
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization} "
                "(the fraction of GPU memory the engine may use, e.g. 0.9)"
            )
        if self.cpu_kv_cache_gb is not None and not self.cpu_kv_cache_gb > 0:
            raise ValueError(
                f"cpu_kv_cache_gb must be > 0, got {self.cpu_kv_cache_gb} (GiB of KV cache on CPU)"
            )
        if self.lora_target_modules is not None and not isinstance(self.lora_target_modules, tuple):
            targets = self.lora_target_modules
            object.__setattr__(
                self, "lora_target_modules", (targets,) if isinstance(targets, str) else tuple(targets)
            )
        if self.enable_lora:
            self._check_lora()
        if self.max_num_seqs is None:  # last: for device=auto this imports torch, after every cheap check
            default = CPU_MAX_NUM_SEQS if self.device_type() == "cpu" else CUDA_MAX_NUM_SEQS
            object.__setattr__(self, "max_num_seqs", default)

    def _check_choices(self) -> None:
        if self.load_format not in LOAD_FORMATS:
            raise ValueError(
                f"load_format must be one of {', '.join(LOAD_FORMATS)}, got {self.load_format!r}"
            )
        if self.dtype != "auto" and self.dtype not in DTYPE_ALIASES:
            raise ValueError(f"dtype must be auto or one of {sorted(DTYPE_ALIASES)}, got {self.dtype!r}")
        if not isinstance(self.device, str) or not _DEVICE.fullmatch(self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    def _check_lora(self) -> None:
        from loraplane.inference_worker.errors import InvalidRequestError

        try:
            self.lora_config()
        except InvalidRequestError as exc:
            raise ValueError(str(exc)) from exc

    @classmethod
    def from_kwargs(cls, **kwargs) -> EngineConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"unknown engine options: {unknown}; known: {sorted(names)}")
        return cls(**kwargs)

    def lora_config(self) -> LoRAConfig:
        """The LoRA manager's capacity settings (validated there: one place for their rules)."""
        from loraplane.inference_worker.lora.config import LoRAConfig

        return LoRAConfig(
            max_loras=self.max_loras,
            max_lora_rank=self.max_lora_rank,
            max_cpu_loras=self.max_cpu_loras,
            lora_dtype=self.lora_dtype,
            target_modules=self.lora_target_modules,
        )

    def device_type(self) -> str:
        """`cpu` or `cuda`: the explicit device's type, or for `auto` whether torch sees a GPU."""
        if self.device != "auto":
            return self.device.split(":")[0]
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def kv_cache_tokens(self, max_model_len: int) -> int:
        """Tokens of KV the CPU cache holds when no size is given: room for `max_num_seqs` full-length
        sequences, at most 4 (more running sequences share it; `kv_cache_memory` buys more)."""
        return min(self.max_num_seqs, CPU_KV_FULL_SEQUENCES) * max_model_len

    def prefill_cap(self, device_type: str) -> int:
        """The per-step prefill chunk cap (0: none). On CPU a step of thousands of prompt tokens takes
        seconds, so by default a short request's first token does not wait behind a long prompt."""
        if self.long_prefill_token_threshold is not None:
            return self.long_prefill_token_threshold
        return CPU_LONG_PREFILL_TOKENS if device_type == "cpu" else 0

    def uses_async_scheduling(self, device_type: str) -> bool:
        """`async_scheduling=None` (auto): on for CUDA, where host work can overlap the GPU; off on CPU."""
        return device_type == "cuda" if self.async_scheduling is None else self.async_scheduling


_BYTES = re.compile(r"(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?)([bB]?)")


def parse_bytes(text: str) -> int:
    """A byte count from the command line: `1073741824`, `512MiB`, `1.5GiB`, `2GB`, or vLLM's short forms
    (`1g` = 10**9, `1G` = 2**30). Raises ValueError with the accepted forms."""
    match = _BYTES.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size; give bytes, e.g. 536870912, 512MiB, 2GB, 1.5GiB or 2G")
    number, unit, binary, suffix = match.groups()
    power = "KMGT".index(unit.upper()) + 1 if unit else 0
    base = 1024 if binary or (unit.isupper() and not suffix) else 1000
    return int(float(number) * base**power)


def _env_flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name} must be 1 or 0 (true/false), got {os.environ[name]!r}")


def _require_positive_int(name: str, value: object) -> None:
    _require_int(name, value, minimum=1)


def _require_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
