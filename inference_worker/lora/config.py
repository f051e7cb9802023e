"""`LoRAConfig`: the engine's multi-LoRA capacity settings, built once at the entry point."""

from __future__ import annotations

from dataclasses import dataclass

from loraplane.adapter_format.modules import SUPPORTED_MODULES
from loraplane.inference_worker.errors import InvalidRequestError

LORA_DTYPES = ("auto", "float16", "bfloat16", "float32")


@dataclass(frozen=True)
class LoRAConfig:
    """Capacity of the multi-LoRA engine (vLLM's names and defaults, except `max_loras=4`).

    Semantics: `max_loras` GPU slots (distinct adapters in one batch); every slot holds up to
    `max_lora_rank`; `max_cpu_loras` adapters' weights stay in host memory (an LRU behind the slots,
    `None` -> `max_loras`); `lora_dtype="auto"` uses the base model's dtype. `target_modules` (PEFT
    names, `None` -> all seven projections) are the projections that get LoRA: a fused projection is
    wrapped when one of its slices is listed, the others run with no LoRA work, and adapters that target
    a module outside the list are rejected.
    """

    max_loras: int = 4
    max_lora_rank: int = 16
    max_cpu_loras: int | None = None
    lora_dtype: str = "auto"
    target_modules: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _require_positive_int("max_loras", self.max_loras)
        _require_positive_int("max_lora_rank", self.max_lora_rank)
        if self.max_cpu_loras is None or self.max_cpu_loras <= 0:
            object.__setattr__(self, "max_cpu_loras", self.max_loras)
        _require_positive_int("max_cpu_loras", self.max_cpu_loras)
        if self.max_cpu_loras < self.max_loras:
            raise InvalidRequestError(
                f"max_cpu_loras ({self.max_cpu_loras}) must be >= max_loras ({self.max_loras})",
                param="max_cpu_loras",
            )
        dtype = str(self.lora_dtype).removeprefix("torch.")
        if dtype not in LORA_DTYPES:
            raise InvalidRequestError(
                f"lora_dtype must be one of {', '.join(LORA_DTYPES)}, got {self.lora_dtype!r}", "lora_dtype"
            )
        object.__setattr__(self, "lora_dtype", dtype)
        object.__setattr__(self, "target_modules", _target_modules(self.target_modules))

    @property
    def enabled_modules(self) -> tuple[str, ...]:
        return self.target_modules or SUPPORTED_MODULES


def _target_modules(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = (value,) if isinstance(value, str) else tuple(value)
    unknown = [n for n in names if n not in SUPPORTED_MODULES]
    if unknown or not names:
        raise InvalidRequestError(
            f"lora_target_modules must be a non-empty subset of {', '.join(SUPPORTED_MODULES)}; "
            f"got {list(names)!r}",
            param="lora_target_modules",
        )
    return tuple(n for n in SUPPORTED_MODULES if n in names)  # canonical order, no duplicates


def _require_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequestError(f"{name} must be an int >= 1, got {value!r}", param=name)
