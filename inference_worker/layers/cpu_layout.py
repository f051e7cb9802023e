"""CPU weight packing: a transform applied to a loaded model so its GEMMs stream weights at memory speed.

On CPU a decode step multiplies a few rows by every weight matrix, so its time is how fast the GEMM
reads the weights. `F.linear` on an `[out, in]` row-major weight reads them far below the memory
bandwidth at small batch; oneDNN's inner product on a weight reordered once into its blocked layout
reads them close to it (measured on SmolLM2's shapes at batch 5-8, weights cold in cache: 1.6-1.7x
faster than `F.linear`). Each packed layer keeps its dense `weight` (the linear-layer contract, the
LoRA wrapper and tied embeddings read it) and adds `packed_weight`, which its forward uses.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)

_BATCH_HINT = 8  # oneDNN picks the blocked layout for this many rows; any row count runs with it
# A oneDNN call costs ~13 us more than F.linear: below this many weights (tiny test models) it loses.
MIN_PACKED_NUMEL = 2**18


def can_pack(weight: torch.Tensor, min_numel: int = MIN_PACKED_NUMEL) -> bool:
    return (
        weight.numel() >= min_numel
        and weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and weight.dim() == 2
        and torch.backends.mkldnn.is_available()
    )


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """Shape: weight [out, in] fp32 -> an opaque oneDNN tensor for `packed_linear`."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), _BATCH_HINT)


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """y = x W^T (+ b) with W packed by `pack_weight`. Shape: x [T, in] -> [T, out]."""
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed, bias, "none", [], "")


def pack_linear_weights(model: nn.Module, min_numel: int = MIN_PACKED_NUMEL) -> int:
    """Give every module with a `packed_weight` slot (the engine's linear layers and LM head) and at
    least `min_numel` fp32 weights its packed weight; returns how many were packed (0 without oneDNN)."""
    count = 0
    for module in model.modules():
        if hasattr(module, "packed_weight") and can_pack(module.weight, min_numel):
            module.packed_weight = pack_weight(module.weight)
            count += 1
    logger.info("packed %d CPU weight matrices for oneDNN", count)
    return count
