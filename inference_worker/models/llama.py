"""Llama-family decoder (Llama 2/3, Mistral, Qwen2, SmolLM) as explicit code.

Fused qkv and gate_up projections, per-parameter weight loaders, tied embeddings. Qwen2 differs only by
the qkv bias, Mistral by its sliding window (the loader caps `max_model_len` at the window, so full
attention is exact).
"""

from __future__ import annotations

import torch
from torch import nn

from loraplane.inference_worker.layers.attention import Attention
from loraplane.inference_worker.layers.embedding import LMHead, VocabEmbedding
from loraplane.inference_worker.layers.linear import gate_up_linear, qkv_linear, single_linear
from loraplane.inference_worker.layers.norm import RMSNorm
from loraplane.inference_worker.layers.rotary import RotaryEmbedding
from loraplane.kernels.fused_ops import silu_and_mul

# HF checkpoint name fragment -> (our fused module fragment, shard name)
STACKED_PARAMS = [
    (".q_proj.", ".qkv_proj.", "q_proj"),
    (".k_proj.", ".qkv_proj.", "k_proj"),
    (".v_proj.", ".qkv_proj.", "v_proj"),
    (".gate_proj.", ".gate_up_proj.", "gate_proj"),
    (".up_proj.", ".gate_up_proj.", "up_proj"),
]


RopeRows = tuple[torch.Tensor, torch.Tensor]  # (cos, sin) rows of this forward's positions


def head_dim_of(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


class LlamaAttention(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.head_dim = head_dim_of(config)
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        is_qwen2 = config.model_type == "qwen2"
        llama_bias = bool(getattr(config, "attention_bias", False)) and not is_qwen2
        qkv_bias = llama_bias or is_qwen2
        self.qkv_proj = qkv_linear(
            config.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim, qkv_bias
        )
        self.o_proj = single_linear(self.num_heads * self.head_dim, config.hidden_size, "o_proj", llama_bias)
        self.attn = Attention(self.num_heads, self.num_kv_heads, self.head_dim, self.head_dim**-0.5)

    def forward(self, cos_sin: RopeRows, hidden: torch.Tensor) -> torch.Tensor:
        return self.o_proj(self.attn(self.qkv_proj(hidden), cos_sin))


class LlamaMLP(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        bias = bool(getattr(config, "mlp_bias", False))
        self.gate_up_proj = gate_up_linear(config.hidden_size, config.intermediate_size, bias)
        self.down_proj = single_linear(config.intermediate_size, config.hidden_size, "down_proj", bias)
        self.intermediate_size = config.intermediate_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(silu_and_mul(self.gate_up_proj(x)))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(config)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self, cos_sin: RopeRows, hidden: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, residual = self.input_layernorm.forward_add(hidden, residual)
        hidden = self.self_attn(cos_sin, hidden)
        hidden, residual = self.post_attention_layernorm.forward_add(hidden, residual)
        return self.mlp(hidden), residual


class LlamaModel(nn.Module):
    def __init__(self, config, max_positions: int) -> None:
        super().__init__()
        rotary = RotaryEmbedding(config, head_dim_of(config), max_positions)
        self.rotary = rotary
        self.embed_tokens = VocabEmbedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        hidden, residual = self.embed_tokens(input_ids), None
        cos_sin = self.rotary.cos_sin(positions)
        for layer in self.layers:
            hidden, residual = layer(cos_sin, hidden, residual)
        hidden, _ = self.norm.forward_add(hidden, residual)
        return hidden


class LlamaForCausalLM(nn.Module):
    """Shape: forward(input_ids [T], positions [T]) -> hidden [T, hidden]; compute_logits -> [N, vocab]."""

    def __init__(self, config, max_positions: int) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaModel(config, max_positions)
        self.lm_head = LMHead(config.vocab_size, config.hidden_size)
        if getattr(config, "tie_word_embeddings", False):
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, positions)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

    def load_weights(self, weights) -> set[str]:
        """Copy (name, tensor) pairs from an HF checkpoint into the fused parameters; returns names loaded."""
        params = dict(self.named_parameters(remove_duplicate=False))
        loaded = set()
        tied = getattr(self.config, "tie_word_embeddings", False)
        for name, tensor in weights:
            if "rotary_emb.inv_freq" in name or (tied and name == "lm_head.weight"):
                continue
            target, shard = _map_name(name)
            if target not in params:
                continue
            param = params[target]
            loader = getattr(param, "weight_loader", None)
            if loader is not None:
                loader(param, tensor.to(param.dtype), shard)
            else:
                _default_loader(param, tensor, target)
            loaded.add(target)
        return loaded


def _map_name(name: str) -> tuple[str, str | None]:
    for hf, ours, shard in STACKED_PARAMS:
        if hf in name:
            return name.replace(hf, ours), shard
    for single in ("o_proj", "down_proj"):
        if f".{single}." in name:
            return name, single
    return name, None


def _default_loader(param: nn.Parameter, tensor: torch.Tensor, name: str) -> None:
    if param.shape != tensor.shape:
        raise ValueError(f"{name}: checkpoint shape {tuple(tensor.shape)} != expected {tuple(param.shape)}")
    param.data.copy_(tensor)
