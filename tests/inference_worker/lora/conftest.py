"""Fixtures: a tiny random Llama and PEFT adapters written by peft itself for it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

TINY_LLAMA = dict(
    vocab_size=256,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    tie_word_embeddings=False,
)


def tiny_llama_config(**overrides: Any):
    from transformers import LlamaConfig

    return LlamaConfig(**{**TINY_LLAMA, **overrides})


@pytest.fixture(scope="session")
def tiny_llama():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config()).eval()


def write_peft_adapter(base, out_dir: Path, seed: int = 0, std: float = 0.1, **lora_kwargs: Any) -> Path:
    """Save a PEFT LoRA adapter for `base` with random, non-zero A and B (PEFT initialises B to 0)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(**{"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], **lora_kwargs})
    model = get_peft_model(base, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    model.save_pretrained(out_dir)
    model.unload()  # restore the shared base model's original modules
    return out_dir


@pytest.fixture
def make_adapter(tiny_llama, tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "adapter", seed: int = 0, **lora_kwargs: Any) -> Path:
        return write_peft_adapter(tiny_llama, tmp_path / name, seed=seed, **lora_kwargs)

    return make


def edit_config(adapter_dir: Path, **changes: Any) -> Path:
    path = adapter_dir / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))
    return adapter_dir


# Adapters covering the PEFT features the engine must reproduce exactly (name -> LoraConfig kwargs).
ADAPTER_SPECS: dict[str, dict[str, Any]] = {
    "qv": dict(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
    "all-rslora": dict(r=4, lora_alpha=8, target_modules="all-linear", use_rslora=True),
    "patterns": dict(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "o_proj", "down_proj"],
        rank_pattern={"k_proj": 2, "model.layers.1.self_attn.o_proj": 4},
        alpha_pattern={"down_proj": 3},
    ),
    "mlp-layer1": dict(r=16, lora_alpha=32, target_modules=["gate_proj", "up_proj"], layers_to_transform=[1]),
    "regex": dict(r=2, lora_alpha=4, target_modules=r".*\.layers\.0\.self_attn\.(q|v)_proj"),
}


@pytest.fixture(scope="session")
def tiny_adapters(tiny_llama, tmp_path_factory) -> dict[str, Path]:
    """Every ADAPTER_SPECS adapter written by peft for `tiny_llama` (session-wide, read-only)."""
    root = tmp_path_factory.mktemp("tiny-adapters")
    return {
        name: write_peft_adapter(tiny_llama, root / name, seed=i, **spec)
        for i, (name, spec) in enumerate(ADAPTER_SPECS.items())
    }
