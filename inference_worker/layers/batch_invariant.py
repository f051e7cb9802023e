"""Batch-invariant mode for the engine (`EngineConfig.batch_invariant`, vLLM's `VLLM_BATCH_INVARIANT`).

A request's greedy output must not depend on what else is in the batch. Each op takes a form whose
per-row sum order is fixed by the row alone (see `loraplane.kernels.dispatch.batch_invariant_mode`,
which the model runner enters for every step): on CUDA, Triton GEMMs with one tiling per weight shape
instead of cuBLAS, the SGMV LoRA kernels without split-K, decode attention split at fixed positions and
reduced in split order; on CPU, the AVX-512 panel GEMM for every linear layer at every row count,
per-token batched LoRA products and attention one sequence at a time. `prepare_model` readies a
loaded CPU model for it.
"""

from __future__ import annotations

import torch
from torch import nn

from loraplane.kernels.cpu_gemm import PanelWeight, pack_panels, panel_kernels


def prepare_model(model: nn.Module, device: torch.device) -> int:
    """Pack every CPU linear layer's weight (any size) into the panel GEMM's layout, whose row results
    do not depend on the row count; returns how many were packed. Nothing to do on CUDA.

    Raises ValueError when the CPU cannot run batch-invariant (non-fp32 weights or no AVX-512 kernel)."""
    if device.type != "cpu":
        return 0
    modules = [m for m in model.modules() if hasattr(m, "packed_weight")]
    dtypes = sorted({str(m.weight.dtype) for m in modules if m.weight.dtype != torch.float32})
    if dtypes:
        raise ValueError(
            f"batch_invariant on CPU needs fp32 weights, got {', '.join(dtypes)}; pass dtype='float32' "
            "(--dtype float32) or turn batch_invariant off"
        )
    if panel_kernels() is None:
        raise ValueError(
            "batch_invariant on CPU needs the AVX-512 panel GEMM (loraplane.kernels.cpu_gemm), which did "
            "not build here (no AVX-512 or no g++); turn batch_invariant off"
        )
    packed = 0
    for module in modules:
        if not isinstance(module.packed_weight, PanelWeight):
            module.packed_weight = pack_panels(module.weight)
            packed += 1
    return packed
