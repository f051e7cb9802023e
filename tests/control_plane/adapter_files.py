"""Write small PEFT-shaped LoRA adapter folders without torch (config + a valid safetensors file)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

HIDDEN = 32


def write_adapter(directory: Path, r: int = 8, seed: int = 0, **config: Any) -> Path:
    """An adapter for a 32-wide model targeting q_proj and v_proj; `seed` changes the weights (version)."""
    directory.mkdir(parents=True, exist_ok=True)
    body = {
        "peft_type": "LORA",
        "r": r,
        "lora_alpha": 2 * r,
        "target_modules": ["q_proj", "v_proj"],
        "bias": "none",
        "base_model_name_or_path": None,
        **config,
    }
    (directory / "adapter_config.json").write_text(json.dumps(body))
    header: dict[str, Any] = {}
    offset = 0
    for module in ("q_proj", "v_proj"):
        for part, shape in (("lora_A", [r, HIDDEN]), ("lora_B", [HIDDEN, r])):
            size = shape[0] * shape[1] * 4
            key = f"base_model.model.model.layers.0.self_attn.{module}.{part}.weight"
            header[key] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
            offset += size
    raw = json.dumps(header).encode()
    data = bytes((seed + i) % 251 for i in range(offset))
    (directory / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return directory
