"""Triton multi-LoRA shrink, ``y[s] = scale * x @ A_s^T`` per token's slot.

Grid ``(num_tiles, n_or_split, num_slices)``: SGMV-style segment tiles (a bound independent of the batch's
adapters, so CUDA-graph safe), several slices per launch, each slot's rank masking the loads; see
:mod:`loraplane.kernels.triton_lora_common`. With ``split_k > 1`` each K share stores its own fp32
partial and the host sums the shares in index order: no atomics, so a run's result never depends on
which program finished first (``tl.atomic_add`` here made two identical runs differ). The expand is
:mod:`loraplane.kernels.triton_lora_expand`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from loraplane.kernels.dispatch import batch_invariant, dot_precision
from loraplane.kernels.lora_meta import MAX_SLICES_PER_LAUNCH, LoRAKernelMeta
from loraplane.kernels.triton_lora_common import (
    check_a_slices,
    num_segment_tiles,
    segment_meta_args,
    segment_tile,
    slice_ptr,
)


@dataclass(frozen=True)
class ShrinkConfig:
    block_m: int
    block_n: int
    block_k: int
    split_k: int
    num_warps: int = 4
    num_stages: int = 3


@triton.jit
def _shrink_kernel(
    x_ptr,
    a0_ptr,
    a1_ptr,
    a2_ptr,
    y_ptr,
    token_indices_ptr,
    active_num_tokens_ptr,
    active_slot_start_ptr,
    active_slots_ptr,
    slot_rank_ptr,
    max_loras,
    in_features,
    max_rank,
    scale,
    stride_xt,
    stride_xk,
    stride_al,
    stride_ar,
    stride_ak,
    stride_ys,
    stride_yt,
    stride_yr,
    stride_yk,
    LORAS_P2: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_tile, pid_nk, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    slot, m_start, count, seg_start = segment_tile(
        pid_tile, active_slots_ptr, active_num_tokens_ptr, active_slot_start_ptr, max_loras, BLOCK_M, LORAS_P2
    )
    if slot < 0:
        return
    rank = tl.minimum(tl.load(slot_rank_ptr + slot), max_rank)
    pid_n, pid_k = pid_nk // SPLIT_K, pid_nk % SPLIT_K
    if pid_n * BLOCK_N >= rank:
        return
    a_ptr = slice_ptr(pid_s, a0_ptr, a1_ptr, a2_ptr)
    offs_m = m_start + tl.arange(0, BLOCK_M)
    m_mask = offs_m < count
    tok = tl.load(token_indices_ptr + seg_start + offs_m, mask=m_mask, other=0).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < rank
    x_rows = x_ptr + tok[:, None] * stride_xt
    a_rows = a_ptr + slot.to(tl.int64) * stride_al + offs_n[None, :] * stride_ar
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(pid_k * BLOCK_K, in_features, BLOCK_K * SPLIT_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < in_features
        xt = tl.load(x_rows + offs_k[None, :] * stride_xk, mask=m_mask[:, None] & k_mask[None, :], other=0.0)
        at = tl.load(a_rows + offs_k[:, None] * stride_ak, mask=n_mask[None, :] & k_mask[:, None], other=0.0)
        acc += tl.dot(xt, at, input_precision=PRECISION)
    acc *= scale
    y_ptrs = (
        y_ptr + pid_k * stride_yk + pid_s * stride_ys + tok[:, None] * stride_yt + offs_n[None, :] * stride_yr
    )
    tl.store(y_ptrs, acc, mask=m_mask[:, None] & (offs_n < max_rank)[None, :])


def shrink_config(num_tokens: int, max_rank: int) -> ShrinkConfig:
    """Default shrink tiles (H200 sweep): split-K for decode-sized batches, taller row tiles for prefill;
    in batch-invariant mode one tiling for every token count, without split-K."""
    block_n = max(16, min(64, triton.next_power_of_2(max_rank)))
    if batch_invariant():
        return ShrinkConfig(block_m=64, block_n=block_n, block_k=128, split_k=1)
    if num_tokens <= 128:
        return ShrinkConfig(block_m=16, block_n=block_n, block_k=256, split_k=4)
    if num_tokens <= 1024:
        return ShrinkConfig(block_m=32, block_n=block_n, block_k=128, split_k=2)
    return ShrinkConfig(block_m=64, block_n=block_n, block_k=128, split_k=4, num_warps=8)


def shrink(
    x: torch.Tensor,
    lora_a: Sequence[torch.Tensor],
    y: torch.Tensor,
    meta: LoRAKernelMeta,
    scale: float = 1.0,
    config: ShrinkConfig | None = None,
) -> None:
    """Launch the shrink kernel (contract: :func:`loraplane.kernels.lora_ops.lora_shrink_ref`)."""
    num_tokens, in_features = x.shape
    max_rank = y.shape[2]
    cfg = config or shrink_config(num_tokens, max_rank)
    strides = check_a_slices(lora_a)
    for first in range(0, len(lora_a), MAX_SLICES_PER_LAUNCH):
        group = list(lora_a[first : first + MAX_SLICES_PER_LAUNCH])
        pads = group + [group[0]] * (MAX_SLICES_PER_LAUNCH - len(group))
        y_part = y[first : first + len(group)]
        # split-K: one zeroed partial per K share (tokens without an adapter read 0 as before)
        target = y_part if cfg.split_k == 1 else y_part.new_zeros(cfg.split_k, *y_part.shape)
        grid = (
            num_segment_tiles(num_tokens, meta.max_loras, cfg.block_m),
            triton.cdiv(max_rank, cfg.block_n) * cfg.split_k,
            len(group),
        )
        _shrink_kernel[grid](
            x,
            *pads,
            target,
            *segment_meta_args(meta),
            meta.max_loras,
            in_features,
            max_rank,
            scale,
            x.stride(0),
            x.stride(1),
            *strides,
            *target.stride()[-3:],
            target.stride(0) if cfg.split_k > 1 else 0,
            LORAS_P2=triton.next_power_of_2(meta.max_loras),
            BLOCK_M=cfg.block_m,
            BLOCK_N=cfg.block_n,
            BLOCK_K=cfg.block_k,
            SPLIT_K=cfg.split_k,
            PRECISION=dot_precision(x.dtype),
            num_warps=cfg.num_warps,
            num_stages=cfg.num_stages,
        )
        if cfg.split_k > 1:
            torch.sum(target, dim=0, out=y_part)  # a fixed order, run after run
