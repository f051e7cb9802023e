"""Fixtures for the worker service: PEFT-format adapters for the demo model, gRPC stubs, a fake control plane.

End-to-end modules start ONE worker child process each (module-scoped), so at most one process holds the
demo model at a time; the offline reference runs in the test process before its worker starts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_control_plane import FakeControlPlane  # noqa: E402
from worker_process import REPO  # noqa: E402

EXAMPLE_ADAPTER = REPO / "examples" / "adapters" / "sql-lora"


def write_demo_adapter(model_dir: str, out: Path, seed: int, r: int = 8, alpha: int = 16) -> Path:
    """A PEFT LoRA adapter (q_proj, v_proj) for the demo model with random non-zero weights, written in
    PEFT's file format (adapter_config.json + adapter_model.safetensors) without loading the model."""
    import torch
    from safetensors.torch import save_file

    config = json.loads((Path(model_dir) / "config.json").read_text())
    hidden, head_dim = config["hidden_size"], config["head_dim"]
    out_features = {
        "q_proj": config["num_attention_heads"] * head_dim,
        "v_proj": config["num_key_value_heads"] * head_dim,
    }
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(config["num_hidden_layers"]):
        for module, width in out_features.items():
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(r, hidden, generator=generator) * 0.05
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(width, r, generator=generator) * 0.05
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    peft_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": alpha,
        "target_modules": list(out_features),
        "bias": "none",
        "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct",
    }
    (out / "adapter_config.json").write_text(json.dumps(peft_config))
    return out


@pytest.fixture(scope="session")
def demo_adapters(tmp_path_factory, demo_model_path: str) -> dict[str, str]:
    """name -> adapter directory: `sql-lora` (the committed example when present), `other-lora`, and
    `rank-32` (too large for max_lora_rank 16)."""
    root = tmp_path_factory.mktemp("adapters")
    sql = EXAMPLE_ADAPTER if (EXAMPLE_ADAPTER / "adapter_config.json").is_file() else None
    return {
        "sql-lora": str(sql or write_demo_adapter(demo_model_path, root / "sql-lora", seed=1)),
        "other-lora": str(write_demo_adapter(demo_model_path, root / "other-lora", seed=2)),
        "rank-32": str(write_demo_adapter(demo_model_path, root / "rank-32", seed=3, r=32, alpha=32)),
    }


@pytest.fixture(scope="module")
async def fake_cp() -> AsyncIterator[FakeControlPlane]:
    cp = FakeControlPlane()
    await cp.start()
    yield cp
    await cp.stop()
