"""Triton multi-LoRA expand, ``out[:, slice s] (+)= y[s] @ B_s^T`` per token's slot.

Grid ``(num_tiles, n_blocks, num_slices)``: SGMV-style segment tiles (a bound independent of the batch's
adapters, so CUDA-graph safe), several slices per launch, each slot's rank masking the loads; see
:mod:`loraplane.kernels.triton_lora_common`. The shrink is :mod:`loraplane.kernels.triton_lora_shrink`.
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
    check_b_slices,
    num_segment_tiles,
    segment_meta_args,
    segment_tile,
    slice_columns,
    slice_ptr,
)


@dataclass(frozen=True)
class ExpandConfig:
    block_m: int
    block_n: int
    num_warps: int = 4
    num_stages: int = 2


@triton.jit
def _expand_kernel(
    y_ptr,
    b0_ptr,
    b1_ptr,
    b2_ptr,
    out_ptr,
    token_indices_ptr,
    active_num_tokens_ptr,
    active_slot_start_ptr,
    active_slots_ptr,
    slot_rank_ptr,
    max_loras,
    max_rank,
    n0,
    n1,
    n2,
    off0,
    off1,
    off2,
    stride_bl0,
    stride_bl1,
    stride_bl2,
    stride_ys,
    stride_yt,
    stride_yr,
    stride_bn,
    stride_br,
    stride_ot,
    stride_on,
    ADD_INPUTS: tl.constexpr,
    LORAS_P2: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_R: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_tile, pid_n, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    n_out, col0, stride_bl = slice_columns(
        pid_s, n0, n1, n2, off0, off1, off2, stride_bl0, stride_bl1, stride_bl2
    )
    b_ptr = slice_ptr(pid_s, b0_ptr, b1_ptr, b2_ptr)
    if pid_n * BLOCK_N >= n_out:
        return
    slot, m_start, count, seg_start = segment_tile(
        pid_tile, active_slots_ptr, active_num_tokens_ptr, active_slot_start_ptr, max_loras, BLOCK_M, LORAS_P2
    )
    if slot < 0:
        return
    rank = tl.minimum(tl.load(slot_rank_ptr + slot), max_rank)
    rank16 = tl.minimum(tl.cdiv(rank, 16) * 16, max_rank)  # never past the row
    offs_m = m_start + tl.arange(0, BLOCK_M)
    m_mask = offs_m < count
    tok = tl.load(token_indices_ptr + seg_start + offs_m, mask=m_mask, other=0).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < n_out
    out_ptrs = out_ptr + tok[:, None] * stride_ot + (col0 + offs_n)[None, :] * stride_on
    out_mask = m_mask[:, None] & n_mask[None, :]
    # The read half of out's read-modify-write does not depend on the product: request it first.
    if ADD_INPUTS:
        acc = tl.load(out_ptrs, mask=out_mask, other=0.0).to(tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    y_rows = y_ptr + pid_s * stride_ys + tok[:, None] * stride_yt
    b_cols = b_ptr + slot.to(tl.int64) * stride_bl + offs_n[None, :] * stride_bn
    for r0 in range(0, rank, BLOCK_R):
        offs_r = r0 + tl.arange(0, BLOCK_R)
        r_mask = offs_r < rank
        # Loads masked at a multiple of 16 stay vectorized along the contiguous rank; the columns in
        # [rank, rank16) are then dropped by a select.
        rv_mask = offs_r < rank16
        yt = tl.load(y_rows + offs_r[None, :] * stride_yr, mask=m_mask[:, None] & rv_mask[None, :], other=0.0)
        bt = tl.load(b_cols + offs_r[:, None] * stride_br, mask=rv_mask[:, None] & n_mask[None, :], other=0.0)
        yt = tl.where(r_mask[None, :], yt, 0.0)
        bt = tl.where(r_mask[:, None], bt, 0.0)
        acc += tl.dot(yt.to(bt.dtype), bt, input_precision=PRECISION)
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=out_mask)


def expand_config(num_tokens: int) -> ExpandConfig:
    """Default expand tiles (from the H200 sweep in benchmarks/results/kernels_h200_sweep.json); in
    batch-invariant mode the prefill tiling for every token count."""
    if num_tokens <= 512 and not batch_invariant():
        return ExpandConfig(block_m=16, block_n=128)
    return ExpandConfig(block_m=64, block_n=128, num_warps=8)


def expand(
    y: torch.Tensor,
    lora_b: Sequence[torch.Tensor],
    out: torch.Tensor,
    meta: LoRAKernelMeta,
    slice_offsets: Sequence[int],
    add_inputs: bool = True,
    config: ExpandConfig | None = None,
) -> None:
    """Launch the expand kernel (contract: :func:`loraplane.kernels.lora_ops.lora_expand_ref`)."""
    num_tokens, max_rank = y.shape[1], y.shape[2]
    cfg = config or expand_config(num_tokens)
    inner = check_b_slices(lora_b)
    block_r = max(16, min(64, triton.next_power_of_2(max_rank)))
    for first in range(0, len(lora_b), MAX_SLICES_PER_LAUNCH):
        group = list(lora_b[first : first + MAX_SLICES_PER_LAUNCH])
        offs = list(slice_offsets[first : first + MAX_SLICES_PER_LAUNCH])
        pad = MAX_SLICES_PER_LAUNCH - len(group)
        widths = [b.shape[1] for b in group] + [0] * pad
        y_part = y[first : first + len(group)]
        grid = (
            num_segment_tiles(num_tokens, meta.max_loras, cfg.block_m),
            triton.cdiv(max(widths), cfg.block_n),
            len(group),
        )
        _expand_kernel[grid](
            y_part,
            *(group + [group[0]] * pad),
            out,
            *segment_meta_args(meta),
            meta.max_loras,
            max_rank,
            *widths,
            *(offs + [0] * pad),
            *([b.stride(0) for b in group] + [0] * pad),
            *y_part.stride(),
            *inner,
            out.stride(0),
            out.stride(1),
            ADD_INPUTS=add_inputs,
            LORAS_P2=triton.next_power_of_2(meta.max_loras),
            BLOCK_M=cfg.block_m,
            BLOCK_N=cfg.block_n,
            BLOCK_R=block_r,
            PRECISION=dot_precision(lora_b[0].dtype),
            num_warps=cfg.num_warps,
            num_stages=cfg.num_stages,
        )
