"""Rotary position embedding with HF's rope-scaling rules (default, linear, llama3, yarn, ...)."""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS


def _rope_type(config) -> str:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return params.get("rope_type", params.get("type", "default"))


def _default_inv_freq(config, head_dim: int) -> tuple[torch.Tensor, float]:
    params = getattr(config, "rope_parameters", None) or {}
    theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float() / head_dim
    return 1.0 / (theta**exponent), 1.0


class RotaryEmbedding(nn.Module):
    """The cos/sin rows of rotate-half RoPE (the attention layer rotates q and k with them).

    The table is built once for `max_positions` in fp32 (as HF computes it).
    """

    def __init__(self, config, head_dim: int, max_positions: int) -> None:
        super().__init__()
        self.head_dim = head_dim
        rope_type = _rope_type(config)
        if rope_type == "default":
            inv_freq, scaling = _default_inv_freq(config, head_dim)
        else:
            inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](config, torch.device("cpu"))
        t = torch.arange(max_positions, dtype=torch.float32, device="cpu")  # moved with the model later
        freqs = torch.outer(t, inv_freq.float().cpu())
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos() * scaling, persistent=False)
        sin = emb.sin() * scaling
        half = head_dim // 2
        # rotate_half(x) * sin == roll(x, half) * [-sin_1, sin_2]: one roll instead of chunk, neg and cat
        self.register_buffer("sin", torch.cat((-sin[:, :half], sin[:, half:]), dim=-1), persistent=False)

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The cos/sin rows of `positions`, looked up once per forward and shared by every layer.

        Shape: positions [T] -> ([T, 1, D], [T, 1, D]) fp32; the sin rows have their first half negated.
        """
        return self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)
