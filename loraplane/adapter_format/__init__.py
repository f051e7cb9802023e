"""The PEFT LoRA adapter format, torch-free: shared by the control plane and the inference worker.

- `peft_config`: parse and validate `adapter_config.json` (`parse_peft_config`, `validate_adapter_dir`).
- `matching`: PEFT's target-module and rank/alpha pattern matching (parity-tested against peft); user
  patterns run on RE2 (linear time), and patterns it cannot run or too large are refused.
- `modules`: the supported-module vocabulary and module names of a Llama-family model.
- `files`: an adapter directory's files (each resolved and kept inside the directory: no symlink out),
  the weights-file check (safetensors' own header reading) and the adapter version (sha256 of the files).
- `resolve`: a local path or Hugging Face hub id to a local directory.
- `errors`: `AdapterLoadError` (with the offending `field`) and `AdapterSourceNotFoundError`.

Nothing here imports torch, transformers or peft (tests/loraplane/adapter_format checks it), so the
control plane can validate and version adapters without them.
"""

from __future__ import annotations

from loraplane.adapter_format.errors import AdapterLoadError, AdapterSourceNotFoundError
from loraplane.adapter_format.files import adapter_version
from loraplane.adapter_format.modules import SUPPORTED_MODULES, module_key
from loraplane.adapter_format.peft_config import (
    PeftLoRAConfig,
    load_peft_config,
    parse_peft_config,
    validate_adapter_dir,
)
from loraplane.adapter_format.resolve import is_hub_id, resolve_adapter_path

__all__ = [
    "SUPPORTED_MODULES",
    "AdapterLoadError",
    "AdapterSourceNotFoundError",
    "PeftLoRAConfig",
    "adapter_version",
    "is_hub_id",
    "load_peft_config",
    "module_key",
    "parse_peft_config",
    "resolve_adapter_path",
    "validate_adapter_dir",
]
