"""Linear-layer GEMM: a Triton kernel for decode-sized batches on CUDA, ``F.linear`` otherwise.

See :mod:`loraplane.kernels.dispatch` for when Triton kernels run; ``SKINNY_MAX_ROWS`` bounds the rows the
Triton kernel takes (above it cuBLAS is at the bandwidth or compute roofline anyway).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from loraplane.kernels.dispatch import batch_invariant, use_triton

SKINNY_MAX_ROWS = 64
# Past 16 rows cuBLAS is as fast for the widest (gate_up) and deepest (down) Llama-2-7B projections on
# the H200; the Triton kernel keeps the ones it wins (benchmarks/results/gemm_small_m_h200.json).
_WIDE_ROWS, _WIDE_N, _DEEP_K = 16, 16384, 4096
_HALF = (torch.float16, torch.bfloat16)


def linear_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Reference: ``out = x @ weight^T (+ bias)``.

    Semantics::

        for m in range(M):
            for n in range(N):
                out[m, n] = sum(x[m, k] * weight[n, k] for k in range(K)) + (bias[n] if bias else 0)
                # fp32 accumulation, rounded once to x's dtype

    Shape:
        x: [M, K]; weight: [N, K]; bias: [N] or None -> out: [M, N]
    """
    return F.linear(x, weight, bias)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`linear_ref`; the Triton skinny GEMM for up to ``SKINNY_MAX_ROWS`` half-precision rows. In
    batch-invariant mode every half-precision CUDA GEMM runs the Triton kernel with one tiling per weight
    shape (64-row tiles, no split-K), whatever the row count: cuBLAS picks its kernel (and split-K) by
    the row count, so a row's sum order would depend on the batch."""
    if batch_invariant() and x.dim() == 2 and x.dtype in _HALF and weight.dtype == x.dtype and x.is_cuda:
        from loraplane.kernels import triton_gemm

        return triton_gemm.skinny_gemm(x, weight, bias, triton_gemm.INVARIANT_CONFIG)
    skinny = x.dim() == 2 and x.shape[0] <= SKINNY_MAX_ROWS and x.dtype in _HALF and weight.dtype == x.dtype
    if skinny and use_triton(x):
        from loraplane.kernels import triton_gemm

        rows, (n, k) = x.shape[0], weight.shape
        if rows <= _WIDE_ROWS or (n <= _WIDE_N and k <= _DEEP_K):
            return triton_gemm.skinny_gemm(x, weight, bias, triton_gemm.config_for(rows, n))
    return linear_ref(x, weight, bias)
