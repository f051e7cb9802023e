"""CPU weight packing: a transform applied to a loaded model so its GEMMs stream weights at memory speed.

On CPU a decode step multiplies a few rows by every weight matrix, so its time is how fast the GEMM
reads the weights. `F.linear` on an `[out, in]` row-major weight reads them far below the memory
bandwidth at small batch; oneDNN's inner product on a weight reordered once into its blocked layout
reads them close to it. Measured on SmolLM2's shapes at batch 8, one thread: fp32 1.6-2x faster than
`F.linear` on the large matrices (slower below ~2**18 weights, where a oneDNN call's ~13 us overhead
dominates); bf16 (AMX / AVX512-BF16 kernels) 1.4-2.6x faster at every size. Each packed layer keeps its
dense `weight` (the linear-layer contract, the LoRA wrapper and tied embeddings read it) and adds
`packed_weight`, which its forward uses; `release_packed_dense_weights` then drops the dense copies that
no forward reads (oneDNN-packed weights serve every row count), so a bf16 model is resident once.

fp32 weights go to the weight-streaming AVX-512 kernel of `loraplane.kernels.cpu_gemm` where it builds
(another ~18% off oneDNN on SmolLM2's layer weights at batch 8, ~30% off its LM head), else to oneDNN.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging

import torch
from torch import nn

from loraplane.kernels.cpu_gemm import (
    PanelWeight,
    pack_panels,
    pack_panels_contiguous,
    panel_kernels,
    panel_linear,
)

logger = logging.getLogger(__name__)

_BATCH_HINT = 8  # oneDNN picks the blocked layout for this many rows; any row count runs with it
# A oneDNN fp32 call costs ~13 us more than F.linear: below this many weights (tiny test models) it
# loses. bf16 F.linear has no fast small-matrix path on CPU, so a packed bf16 weight wins at any size.
MIN_PACKED_NUMEL = {torch.float32: 2**18, torch.bfloat16: 0}


@functools.cache
def bf16_supported() -> bool:
    """Whether oneDNN has native bf16 matmul kernels on this CPU (AVX512-BF16 or AMX)."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def packable_dtypes() -> tuple[torch.dtype, ...]:
    return (torch.float32, torch.bfloat16) if bf16_supported() else (torch.float32,)


def can_pack(weight: torch.Tensor, min_numel: int | None = None) -> bool:
    """Whether `pack_weight` applies: a 2-D CPU fp32 weight (or bf16 where oneDNN has bf16 kernels) of
    at least `min_numel` elements (default: `MIN_PACKED_NUMEL` of its dtype)."""
    if weight.device.type != "cpu" or weight.dim() != 2 or not torch.backends.mkldnn.is_available():
        return False
    if weight.dtype not in packable_dtypes():
        return False
    return weight.numel() >= (MIN_PACKED_NUMEL[weight.dtype] if min_numel is None else min_numel)


def pack_weight(weight: torch.Tensor, use_panels: bool = True) -> torch.Tensor | PanelWeight:
    """Shape: weight [out, in] fp32 or bf16 -> an opaque packed weight (same dtype) for `packed_linear`:
    fp32 panels for the AVX-512 kernel where it is available and `use_panels`, else a oneDNN tensor."""
    if use_panels and weight.dtype == torch.float32 and panel_kernels() is not None:
        return pack_panels(weight)
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), _BATCH_HINT)


def packed_linear(
    x: torch.Tensor, packed: torch.Tensor | PanelWeight, bias: torch.Tensor | None
) -> torch.Tensor:
    """y = x W^T (+ b) with W packed by `pack_weight`; x and b in W's dtype. Shape: x [T, in] -> [T, out]."""
    if isinstance(packed, PanelWeight):
        return panel_linear(x, packed, bias)
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed, bias, "none", [], "")


def pack_linear_weights(model: nn.Module, min_numel: int | None = None) -> int:
    """Give every module with a `packed_weight` slot (the engine's linear layers and LM head) whose
    weight `can_pack` its packed weight; returns how many were packed (0 without oneDNN). fp32 panels
    share one buffer in module order, which is the forward's."""
    modules = [m for m in model.modules() if hasattr(m, "packed_weight") and can_pack(m.weight, min_numel)]
    paneled = [m for m in modules if m.weight.dtype == torch.float32] if panel_kernels() is not None else []
    panels = pack_panels_contiguous([m.weight for m in paneled])
    by_module = {id(m): packed for m, packed in zip(paneled, panels, strict=True)}
    for module in modules:
        module.packed_weight = by_module.get(id(module)) or pack_weight(module.weight, use_panels=False)
    logger.info("packed %d CPU weight matrices (%d in fp32 panels)", len(modules), len(paneled))
    return len(modules)


def release_packed_dense_weights(model: nn.Module) -> int:
    """Drop the dense copy of every weight whose oneDNN-packed copy serves all its forwards, keeping a
    `meta` tensor of the same shape and dtype (shapes stay readable; any compute on it fails loudly).

    fp32 panel weights keep theirs (prefills above `MAX_ROWS` rows run `F.linear` on it), and so does a
    weight shared with another module (the tied embedding table). Returns the bytes released.
    """
    owners: dict[int, int] = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor):
            owners[id(weight)] = owners.get(id(weight), 0) + 1
    released = 0
    for module in model.modules():
        packed = getattr(module, "packed_weight", None)
        if not isinstance(packed, torch.Tensor) or owners.get(id(module.weight)) != 1:
            continue
        released += module.weight.numel() * module.weight.element_size()
        module.weight = nn.Parameter(torch.empty_like(module.weight, device="meta"), requires_grad=False)
    logger.info("released %.0f MiB of dense weights kept packed", released / 2**20)
    return released


def return_freed_memory() -> None:
    """Hand the loader's freed buffers back to the OS (glibc keeps large freed blocks otherwise)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
