"""Helpers for tests and benchmarks: small random HF checkpoints written to disk."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

# A small Llama for GPU smoke tests: big enough for several Triton tiles, fast to build.
SMALL_LLAMA = dict(
    vocab_size=1000,
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=2,
    num_attention_heads=8,
    num_key_value_heads=2,
    max_position_embeddings=512,
    eos_token_id=2,
)

# A tiny Llama/Qwen2 shape for CPU tests (two layers; give it the demo tokenizer's vocab_size, 49152).
TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=2,
)

# Llama-2-7B's shape, for benchmarks that write its config.json and load dummy weights.
LLAMA2_7B = dict(
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    vocab_size=32000,
    max_position_embeddings=4096,
)


def write_random_model(
    model_cls: type[PreTrainedModel],
    config: PretrainedConfig,
    out: str | Path,
    device: str = "cpu",
    std: float = 0.08,
) -> PreTrainedModel:
    """Build `model_cls(config)` with N(0, std) matrices (larger than HF's init, so greedy outputs vary
    from token to token), save it as safetensors in `out`, and return the model (fp32, eval mode)."""
    torch.manual_seed(0)
    model = model_cls(config).to(device=device, dtype=torch.float32).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, std)
    model.save_pretrained(out)
    return model


def write_tiny_model(
    model_cls: type[PreTrainedModel], config: PretrainedConfig, out: Path, tokenizer_src: str | Path
) -> str:
    """`write_random_model` into `out`, plus the tokenizer (and chat template) files of the model in
    `tokenizer_src`, so that `out` loads as a complete model; returns `out` as a string."""
    write_random_model(model_cls, config, out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        src = Path(tokenizer_src) / name
        if src.exists():
            shutil.copy(src, Path(out) / name)
    return str(out)
