"""Triton GEMM for decode-sized batches: ``out = x @ W^T (+ b)`` with few rows, streaming W once.

A decode step multiplies a few rows by each weight matrix, so the time is how fast W is read. cuBLAS
picks tiles for a general problem (at 32 rows it splits K for some shapes and adds a reduction
kernel). Here every program owns ``BLOCK_N`` output columns for all rows, loops over K with deep
software pipelining (``num_stages`` loads in flight), and writes its tile once: no split, no reduction,
and the grid (``N / BLOCK_N`` programs) covers the SMs with narrow column tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl


@dataclass(frozen=True)
class GemmConfig:
    block_n: int = 32
    block_k: int = 256
    num_stages: int = 4
    num_warps: int = 4
    block_m: int | None = None  # None: the row count rounded up to a power of two, 16 to 64


# Batch-invariant mode: one tiling for every row count (kernels.gemm.linear), so a row's sums run in
# the same order whether it is alone or in a batch of hundreds.
INVARIANT_CONFIG = GemmConfig(block_n=64, block_k=64, num_stages=4, num_warps=4, block_m=64)


def config_for(num_rows: int, out_features: int) -> GemmConfig:
    """The tile shape that won on the H200 for the Llama-2-7B projections (gemm_small_m_h200.json):
    wide outputs take wider column tiles and shorter K steps; deep pipelines help a few rows most."""
    block_n = 64 if out_features > 16384 else 32
    block_k = 128 if out_features > 8192 else 256
    num_stages = 6 if block_k == 256 and num_rows <= 16 else 4
    return GemmConfig(block_n, block_k, num_stages)


@triton.jit
def _skinny_gemm_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    out_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_xk,
    stride_wn,
    stride_wk,
    stride_om,
    stride_on,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_n, pid_m = tl.program_id(0), tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_mask, n_mask = offs_m < M, offs_n < N
    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk
    w_ptrs = w_ptr + offs_n.to(tl.int64)[None, :] * stride_wn + offs_k[:, None] * stride_wk
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_mask = offs_k < K - k0
        xt = tl.load(x_ptrs, mask=m_mask[:, None] & k_mask[None, :], other=0.0)
        wt = tl.load(w_ptrs, mask=n_mask[None, :] & k_mask[:, None], other=0.0)
        acc = tl.dot(xt, wt, acc)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    out = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


def skinny_gemm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, config: GemmConfig | None = None
) -> torch.Tensor:
    """``x @ weight^T (+ bias)`` (contract: :func:`kernels.gemm.linear`). Shape: x [M, K], weight [N, K]."""
    num_rows, in_features = x.shape
    out_features = weight.shape[0]
    if weight.shape[1] != in_features:
        raise ValueError(f"x has {in_features} features but weight is {tuple(weight.shape)}")
    cfg = config or GemmConfig()
    block_m = cfg.block_m or max(16, triton.next_power_of_2(min(num_rows, 64)))
    out = torch.empty(num_rows, out_features, dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(out_features, cfg.block_n), triton.cdiv(num_rows, block_m))
    _skinny_gemm_kernel[grid](
        x,
        weight,
        bias if bias is not None else weight,
        out,
        num_rows,
        out_features,
        in_features,
        x.stride(0),
        x.stride(1),
        weight.stride(0),
        weight.stride(1),
        out.stride(0),
        out.stride(1),
        HAS_BIAS=bias is not None,
        BLOCK_M=block_m,
        BLOCK_N=cfg.block_n,
        BLOCK_K=cfg.block_k,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    return out
