"""Triton element-wise kernels of the decoder layer: residual add + RMSNorm, SiLU-and-mul, RoPE.

Each replaces a chain of small PyTorch kernels with one launch, and rounds where the PyTorch
reference rounds (``loraplane.kernels.fused_ops``), so bf16/fp16 results differ from it only by fp32 reduction
order. Inputs are 2-D with a contiguous last dimension; rows may be strided (views of a fused GEMM
output).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _add_rms_norm_kernel(
    x_ptr,
    residual_ptr,
    weight_ptr,
    out_ptr,
    stride_x,
    stride_residual,
    stride_out,
    hidden,
    eps,
    HAS_RESIDUAL: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < hidden
    x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        residual = tl.load(residual_ptr + row * stride_residual + offs, mask=mask, other=0.0)
        x = (x.to(tl.float32) + residual.to(tl.float32)).to(residual.dtype)
        tl.store(residual_ptr + row * stride_residual + offs, x, mask=mask)
    xf = x.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(xf * xf, axis=0) / hidden + eps)
    normed = (xf * rstd).to(x.dtype).to(tl.float32)
    weight = tl.load(weight_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_out + offs, (normed * weight).to(out_ptr.dtype.element_ty), mask=mask)


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One launch for ``residual += x; normed = rms_norm(residual)``; see ``fused_ops.add_rms_norm``.

    With a residual, the sum is written into ``residual`` and the normed rows into ``x`` (in place,
    when dtypes allow). Without one, ``x`` is the new residual and the normed rows go to a new tensor.
    """
    assert x.dim() == 2 and x.stride(-1) == 1, "x must be [T, hidden] with a contiguous last dim"
    hidden = x.shape[1]
    out_dtype = torch.result_type(weight, x)
    if residual is not None:
        assert residual.shape == x.shape and residual.stride(-1) == 1 and residual.dtype == x.dtype
    in_place = residual is not None and out_dtype == x.dtype
    out = x if in_place else torch.empty(x.shape, dtype=out_dtype, device=x.device)
    if x.shape[0] > 0:
        block = triton.next_power_of_2(hidden)
        _add_rms_norm_kernel[(x.shape[0],)](
            x,
            residual if residual is not None else x,
            weight,
            out,
            x.stride(0),
            residual.stride(0) if residual is not None else 0,
            out.stride(0),
            hidden,
            eps,
            HAS_RESIDUAL=residual is not None,
            BLOCK=block,
            num_warps=max(1, min(16, block // 512)),
        )
    return out, (residual if residual is not None else x)


@triton.jit
def _silu_and_mul_kernel(
    x_ptr,
    out_ptr,
    stride_x,
    stride_out,
    width,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < width
    gate = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0)
    up = tl.load(x_ptr + row * stride_x + width + offs, mask=mask, other=0.0).to(tl.float32)
    gate_f = gate.to(tl.float32)
    silu = (gate_f / (1.0 + tl.exp(-gate_f))).to(gate.dtype).to(tl.float32)
    tl.store(out_ptr + row * stride_out + offs, (silu * up).to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """``silu(x[:, :I]) * x[:, I:]`` in one launch. Shape: x [T, 2I] -> [T, I]."""
    assert x.dim() == 2 and x.stride(-1) == 1 and x.shape[1] % 2 == 0
    width = x.shape[1] // 2
    out = torch.empty(x.shape[0], width, dtype=x.dtype, device=x.device)
    if x.shape[0] > 0:
        block = min(1024, triton.next_power_of_2(width))
        grid = (x.shape[0], triton.cdiv(width, block))
        _silu_and_mul_kernel[grid](x, out, x.stride(0), out.stride(0), width, BLOCK=block, num_warps=4)
    return out


@triton.jit
def _rotary_kernel(
    x_ptr,
    cos_ptr,
    sin_ptr,
    stride_x,
    stride_cos,
    stride_sin,
    num_heads,
    HALF: tl.constexpr,
    HEADS_P2: tl.constexpr,
    HALF_P2: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    heads = tl.arange(0, HEADS_P2)[:, None]
    dims = tl.arange(0, HALF_P2)[None, :]
    mask = (heads < num_heads) & (dims < HALF)
    first = x_ptr + token * stride_x + heads * (2 * HALF) + dims
    x1 = tl.load(first, mask=mask, other=0.0)
    x2 = tl.load(first + HALF, mask=mask, other=0.0)
    dim_mask = dims < HALF
    cos1 = tl.load(cos_ptr + token * stride_cos + dims, mask=dim_mask, other=0.0)
    cos2 = tl.load(cos_ptr + token * stride_cos + HALF + dims, mask=dim_mask, other=0.0)
    sin1 = tl.load(sin_ptr + token * stride_sin + dims, mask=dim_mask, other=0.0)
    sin2 = tl.load(sin_ptr + token * stride_sin + HALF + dims, mask=dim_mask, other=0.0)
    x1f = x1.to(tl.float32)
    x2f = x2.to(tl.float32)
    tl.store(first, (x1f * cos1 + x2f * sin1).to(x1.dtype), mask=mask)
    tl.store(first + HALF, (x2f * cos2 + x1f * sin2).to(x1.dtype), mask=mask)


def rotary_embedding(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Rotate-half RoPE on every head of ``x``, in place; see ``fused_ops.rotary_embedding``."""
    assert x.dim() == 2 and x.stride(-1) == 1 and x.shape[1] % head_dim == 0 and head_dim % 2 == 0
    cos2d, sin2d = cos.reshape(-1, head_dim), sin.reshape(-1, head_dim)
    assert cos2d.shape[0] == x.shape[0] and cos2d.stride(-1) == 1 and sin2d.stride(-1) == 1
    assert cos2d.dtype == torch.float32 and sin2d.dtype == torch.float32
    num_heads, half = x.shape[1] // head_dim, head_dim // 2
    if x.shape[0] > 0:
        _rotary_kernel[(x.shape[0],)](
            x,
            cos2d,
            sin2d,
            x.stride(0),
            cos2d.stride(0),
            sin2d.stride(0),
            num_heads,
            HALF=half,
            HEADS_P2=triton.next_power_of_2(num_heads),
            HALF_P2=triton.next_power_of_2(half),
            num_warps=4,
        )
    return x
