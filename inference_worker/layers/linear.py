"""Linear layers with fused output slices and per-parameter weight loaders.

Contract for LoRA (inference_worker/lora wraps these): every projection a LoRA may target has
`in_features`, `output_sizes` (slice widths), `lora_names` (PEFT module name per slice), `weight`
[sum(output_sizes), in_features], optional `bias`, and `forward(x [T, in]) -> [T, sum(output_sizes)]`.
"""

from __future__ import annotations

import torch
from torch import nn

from loraplane.inference_worker.layers.cpu_layout import packed_linear
from loraplane.kernels import gemm


class FusedLinear(nn.Module):
    """y = x W^T (+ b) where W stacks several HF projections (q/k/v or gate/up) along the output dim.

    Semantics: checkpoint tensors for slice `lora_names[i]` are copied into rows
    [sum(output_sizes[:i]), sum(output_sizes[:i+1])) of `weight` (and `bias`) by `weight_loader`.
    Shape: x [T, in_features] -> [T, sum(output_sizes)].
    """

    def __init__(self, in_features: int, output_sizes: list[int], lora_names: list[str], bias: bool = False):
        super().__init__()
        assert len(output_sizes) == len(lora_names)
        self.in_features = in_features
        self.output_sizes = list(output_sizes)
        self.lora_names = list(lora_names)
        self.out_features = sum(output_sizes)
        self.packed_weight: torch.Tensor | None = None  # set on CPU by layers.cpu_layout
        self.weight = nn.Parameter(torch.empty(self.out_features, in_features), requires_grad=False)
        self.weight.weight_loader = self.weight_loader
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_features), requires_grad=False)
            self.bias.weight_loader = self.weight_loader
        else:
            self.register_parameter("bias", None)

    def slice_offset(self, shard: str) -> tuple[int, int]:
        i = self.lora_names.index(shard)
        start = sum(self.output_sizes[:i])
        return start, self.output_sizes[i]

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard: str | None = None) -> None:
        if shard is None:
            shard = self.lora_names[0] if len(self.lora_names) == 1 else None
        if shard is None:
            raise ValueError(f"a fused parameter of shape {tuple(param.shape)} needs a shard name")
        start, size = self.slice_offset(shard)
        target = param.data.narrow(0, start, size)
        if target.shape != loaded.shape:
            raise ValueError(
                f"{shard}: checkpoint shape {tuple(loaded.shape)} != expected {tuple(target.shape)}"
            )
        target.copy_(loaded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed_weight is not None:
            return packed_linear(x, self.packed_weight, self.bias)
        return gemm.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.output_sizes}, lora_names={self.lora_names}"


def qkv_linear(hidden: int, num_heads: int, num_kv_heads: int, head_dim: int, bias: bool) -> FusedLinear:
    kv = num_kv_heads * head_dim
    return FusedLinear(hidden, [num_heads * head_dim, kv, kv], ["q_proj", "k_proj", "v_proj"], bias)


def gate_up_linear(hidden: int, intermediate: int, bias: bool = False) -> FusedLinear:
    return FusedLinear(hidden, [intermediate, intermediate], ["gate_proj", "up_proj"], bias)


def single_linear(in_features: int, out_features: int, name: str, bias: bool = False) -> FusedLinear:
    return FusedLinear(in_features, [out_features], [name], bias)
