"""Fused element-wise ops of the decoder layer: Triton on CUDA, the PyTorch references elsewhere.

The references are the spec and the engine's CPU code (HF Llama numerics). On the CPU, fp32 rows take
the one-pass AVX-512 forms of `loraplane.kernels.cpu_ops` where that extension builds: RoPE bit-identical to
its reference, add + RMSNorm and SiLU-and-mul within a few ulp (another reduction order and `exp`).
The Triton kernels may overwrite their inputs (documented per op): callers pass tensors they no
longer need and use only the returned ones. See :mod:`loraplane.kernels.dispatch` for when Triton runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from loraplane.kernels import cpu_ops
from loraplane.kernels.dispatch import use_triton


def _native_fp32(x: torch.Tensor):
    """The native CPU ops when ``x`` is 2-D fp32 CPU rows they take, else None."""
    if x.dtype != torch.float32 or x.dim() != 2 or x.stride(-1) != 1 or x.device.type != "cpu":
        return None
    return cpu_ops.native_ops()


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm computed in fp32 as HF Llama does. Shape: x [..., hidden], weight [hidden] -> [..., hidden]."""
    if x.dtype == torch.float32 and weight.dtype == torch.float32:
        # one fused op, bit-identical to the expression below in fp32 (not in bf16: it rounds differently)
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def add_rms_norm_ref(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for :func:`add_rms_norm` (returns new tensors, never writes its inputs)."""
    residual = x if residual is None else x + residual
    return rms_norm_ref(residual, weight, eps), residual


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual add then RMSNorm.

    Semantics::

        new_residual = x if residual is None else x + residual   # rounded to x.dtype
        normed = weight * (new_residual * rsqrt(mean(new_residual**2) + eps)).to(x.dtype)
        return normed, new_residual

    Shape: x, residual [T, hidden]; weight [hidden] -> ([T, hidden], [T, hidden]).
    Triton path: with a residual, the new residual is written into ``residual`` and ``normed`` into
    ``x`` (one launch, no allocation); without one, ``x`` itself is returned as the residual.
    """
    if use_triton(x):
        from loraplane.kernels import triton_fused_ops

        return triton_fused_ops.add_rms_norm(x, residual, weight, eps)
    native = _native_fp32(x)
    if native is not None and weight.dtype == torch.float32 and (residual is None or _native_fp32(residual)):
        out, new_residual = native.add_rms_norm(x, residual, weight, eps)
        return out, new_residual
    return add_rms_norm_ref(x, residual, weight, eps)


def silu_and_mul_ref(x: torch.Tensor) -> torch.Tensor:
    """Reference for :func:`silu_and_mul`."""
    half = x.shape[-1] // 2
    return F.silu(x[..., :half]) * x[..., half:]


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """SwiGLU activation over a fused gate_up output.

    Semantics: ``out[t, i] = silu(x[t, i]) * x[t, I + i]`` (silu rounded to x.dtype before the product).
    Shape: x [T, 2I] -> [T, I].
    """
    if use_triton(x):
        from loraplane.kernels import triton_fused_ops

        return triton_fused_ops.silu_and_mul(x)
    native = _native_fp32(x)
    return native.silu_and_mul(x) if native is not None else silu_and_mul_ref(x)


def rotary_embedding_ref(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_dim: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Reference for :func:`rotary_embedding`: returns a new tensor, or writes ``out`` (may be ``x``)."""
    shape, dtype = x.shape, x.dtype
    heads = x.reshape(shape[0], -1, head_dim)
    if dtype == torch.float32 and out is not None:  # no casts: three ops straight into `out`
        rolled = heads.roll(head_dim // 2, dims=-1)
        return torch.add(heads * cos, rolled * sin, out=out.view(heads.shape)).view(shape)
    heads = heads.float()
    rotated = (heads * cos + heads.roll(head_dim // 2, dims=-1) * sin).to(dtype).view(shape)
    return rotated if out is None else out.copy_(rotated)


def rotary_embedding(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Rotate-half RoPE on every head of ``x`` (q and k heads side by side).

    Semantics: per token t and head h, with ``xh = x[t, h*D:(h+1)*D]`` in fp32 and ``half = D // 2``::

        out = xh * cos[t] + roll(xh, half) * sin[t]     # sin rows carry their first half negated

    Shape: x [T, n*D] (rows may be strided, last dim contiguous); cos, sin [T, 1, D] fp32 -> [T, n*D].
    Both paths rotate ``x`` in place and return it (the reference through its ``out`` argument).
    """
    if use_triton(x):
        from loraplane.kernels import triton_fused_ops

        return triton_fused_ops.rotary_embedding(x, cos, sin, head_dim)
    native = _native_fp32(x)
    if native is not None and head_dim % 32 == 0 and cos.is_contiguous() and sin.is_contiguous():
        native.rotary_embedding(x, cos, sin, head_dim)
        return x
    rotary_embedding_ref(x, cos, sin, head_dim, out=x)
    return x
