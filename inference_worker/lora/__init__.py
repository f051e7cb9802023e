"""Multi-LoRA serving: PEFT adapters, a CPU LRU behind GPU slots, LoRA-wrapped linear layers.

Importing this package is cheap (no torch): `LoRARequest` and `LoRAConfig` load at once; the
torch-backed `LoRAManager` and `AdapterInfo` on first access. The adapter format itself (PEFT config
validation, target matching, versions, source resolution) is the torch-free `loraplane.adapter_format`,
shared with the control plane; `adapter_version` is re-exported from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loraplane.adapter_format.files import adapter_version
from loraplane.inference_worker.lora.config import LoRAConfig
from loraplane.inference_worker.lora.request import LoRARequest

if TYPE_CHECKING:
    from loraplane.inference_worker.lora.manager import AdapterInfo, LoRAManager

__all__ = ["AdapterInfo", "LoRAConfig", "LoRAManager", "LoRARequest", "adapter_version"]


def __getattr__(name: str) -> Any:
    if name in ("LoRAManager", "AdapterInfo"):
        from loraplane.inference_worker.lora import manager

        return getattr(manager, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
