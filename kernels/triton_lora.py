"""Triton multi-LoRA shrink and expand (SGMV-style segments, several slices per launch).

Grid ``(num_tiles, n_or_split, num_slices)`` with ``num_tiles = cdiv(T, BLOCK_M) + min(T, max_loras)``,
an upper bound on the segment tiles of any grouping of T tokens, so the grid never depends on the
batch's adapters (CUDA-graph safe). Each program maps its tile id to (slot, rows) from the metadata
(:func:`_segment_tile`); tiles past the last segment and tokens without an adapter do no work. Each
slot's rank comes from ``slot_rank`` and masks the loads, so a rank-8 adapter in a max-rank-64
buffer moves rank-8 bytes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from loraplane.kernels.dispatch import dot_precision
from loraplane.kernels.lora_meta import MAX_SLICES_PER_LAUNCH, LoRAKernelMeta


def check_a_slices(lora_a: Sequence[torch.Tensor]) -> tuple[int, ...]:
    """The strides every ``lora_a`` slice shares (one set of stride arguments serves a launch)."""
    strides = lora_a[0].stride()
    if any(a.stride() != strides or a.dtype != lora_a[0].dtype for a in lora_a):
        raise ValueError("all lora_a slices must share dtype and strides")
    return strides


def check_b_slices(lora_b: Sequence[torch.Tensor]) -> tuple[int, ...]:
    """The inner strides every ``lora_b`` slice shares (their widths and slot strides may differ)."""
    inner = lora_b[0].stride()[1:]
    if any(b.stride()[1:] != inner or b.dtype != lora_b[0].dtype for b in lora_b):
        raise ValueError("all lora_b slices must share dtype and inner strides")
    return inner


@functools.lru_cache(maxsize=8)
def num_sms(device: torch.device) -> int:
    """Multiprocessors of a CUDA device (the grids are sized to cover them); 2 under the CPU interpreter."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2


@triton.jit
def slice_ptr(pid_s, p0, p1, p2):
    """Slice ``pid_s``'s pointer among up to three (a launch covers up to MAX_SLICES_PER_LAUNCH)."""
    ptr = p0
    if pid_s == 1:
        ptr = p1
    elif pid_s == 2:
        ptr = p2
    return ptr


@triton.jit
def slice_columns(pid_s, n0, n1, n2, off0, off1, off2, sbl0, sbl1, sbl2):
    """Slice ``pid_s``'s (width, first output column, B slot stride) among up to three.

    Selected arithmetically, not per branch: Triton specializes an int argument equal to 1 into a
    constexpr (branch types would differ), and keeps their divisibility by 16 (alignment).
    """
    is0, is1, is2 = (pid_s == 0).to(tl.int32), (pid_s == 1).to(tl.int32), (pid_s == 2).to(tl.int32)
    return (
        n0 * is0 + n1 * is1 + n2 * is2,
        off0 * is0 + off1 * is1 + off2 * is2,
        sbl0 * is0 + sbl1 * is1 + sbl2 * is2,
    )


@triton.jit
def rank_masks(rank, max_rank, BLOCK_R: tl.constexpr):
    """(exact rank mask, load mask rounded up to 16 ranks) over ``BLOCK_R``.

    B rows are contiguous in rank: a mask at a multiple of 16 keeps B's loads vectorized (the sectors
    are read anyway); the columns in ``[rank, rank16)`` are then dropped with a select.
    """
    offs_r = tl.arange(0, BLOCK_R)
    return offs_r < rank, offs_r < tl.minimum(tl.cdiv(rank, 16) * 16, max_rank)


@dataclass(frozen=True)
class ShrinkConfig:
    block_m: int
    block_n: int
    block_k: int
    split_k: int
    num_warps: int = 4
    num_stages: int = 3


@dataclass(frozen=True)
class ExpandConfig:
    block_m: int
    block_n: int
    num_warps: int = 4
    num_stages: int = 2


@triton.jit
def _segment_tile(
    pid_tile,
    active_slots_ptr,
    active_num_tokens_ptr,
    active_slot_start_ptr,
    max_loras,
    BLOCK_M: tl.constexpr,
    LORAS_P2: tl.constexpr,
):
    """Map a flat tile id to (slot, first row in the segment, rows in the segment, segment start)."""
    offs = tl.arange(0, LORAS_P2)
    in_range = offs < max_loras
    active = tl.load(active_slots_ptr + offs, mask=in_range, other=-1)
    counts = tl.load(active_num_tokens_ptr + offs, mask=in_range, other=0)
    starts = tl.load(active_slot_start_ptr + offs, mask=in_range, other=0)
    tiles = (counts + BLOCK_M - 1) // BLOCK_M
    cum = tl.cumsum(tiles, 0)
    index = tl.sum((cum <= pid_tile).to(tl.int32), 0)
    pick = offs == index
    slot = tl.sum(tl.where(pick, active, 0), 0)
    first_tile = tl.sum(tl.where(pick, cum - tiles, 0), 0)
    count = tl.sum(tl.where(pick, counts, 0), 0)
    start = tl.sum(tl.where(pick, starts, 0), 0)
    slot = tl.where(pid_tile < tl.sum(tiles, 0), slot, -1)
    return slot, (pid_tile - first_tile) * BLOCK_M, count, start


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
    LORAS_P2: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_tile, pid_nk, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    slot, m_start, count, seg_start = _segment_tile(
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
    y_ptrs = y_ptr + pid_s * stride_ys + tok[:, None] * stride_yt + offs_n[None, :] * stride_yr
    y_mask = m_mask[:, None] & (offs_n < max_rank)[None, :]
    if SPLIT_K == 1:
        tl.store(y_ptrs, acc, mask=y_mask)
    else:
        tl.atomic_add(y_ptrs, acc, mask=y_mask, sem="relaxed")


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
    slot, m_start, count, seg_start = _segment_tile(
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


def shrink_config(num_tokens: int, max_rank: int) -> ShrinkConfig:
    """Default shrink tiles (H200 sweep): split-K for decode-sized batches, taller row tiles for prefill."""
    block_n = max(16, min(64, triton.next_power_of_2(max_rank)))
    if num_tokens <= 128:
        return ShrinkConfig(block_m=16, block_n=block_n, block_k=256, split_k=4)
    if num_tokens <= 1024:
        return ShrinkConfig(block_m=32, block_n=block_n, block_k=128, split_k=2)
    return ShrinkConfig(block_m=64, block_n=block_n, block_k=128, split_k=4, num_warps=8)


def expand_config(num_tokens: int) -> ExpandConfig:
    """Default expand tiles (from the H200 sweep in benchmarks/results/kernels_h200_sweep.json)."""
    if num_tokens <= 512:
        return ExpandConfig(block_m=16, block_n=128)
    return ExpandConfig(block_m=64, block_n=128, num_warps=8)


def _num_tiles(num_tokens: int, max_loras: int, block_m: int) -> int:
    return triton.cdiv(num_tokens, block_m) + min(num_tokens, max_loras)


def _meta_args(meta: LoRAKernelMeta) -> tuple[torch.Tensor, ...]:
    return (
        meta.token_indices_sorted,
        meta.active_num_tokens,
        meta.active_slot_start,
        meta.active_slots,
        meta.slot_rank,
    )


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
    if cfg.split_k > 1:
        y.zero_()
    strides = check_a_slices(lora_a)
    for first in range(0, len(lora_a), MAX_SLICES_PER_LAUNCH):
        group = list(lora_a[first : first + MAX_SLICES_PER_LAUNCH])
        pads = group + [group[0]] * (MAX_SLICES_PER_LAUNCH - len(group))
        y_part = y[first : first + len(group)]
        grid = (
            _num_tiles(num_tokens, meta.max_loras, cfg.block_m),
            triton.cdiv(max_rank, cfg.block_n) * cfg.split_k,
            len(group),
        )
        _shrink_kernel[grid](
            x,
            *pads,
            y_part,
            *_meta_args(meta),
            meta.max_loras,
            in_features,
            max_rank,
            scale,
            x.stride(0),
            x.stride(1),
            *strides,
            *y_part.stride(),
            LORAS_P2=triton.next_power_of_2(meta.max_loras),
            BLOCK_M=cfg.block_m,
            BLOCK_N=cfg.block_n,
            BLOCK_K=cfg.block_k,
            SPLIT_K=cfg.split_k,
            PRECISION=dot_precision(x.dtype),
            num_warps=cfg.num_warps,
            num_stages=cfg.num_stages,
        )


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
            _num_tiles(num_tokens, meta.max_loras, cfg.block_m),
            triton.cdiv(max(widths), cfg.block_n),
            len(group),
        )
        _expand_kernel[grid](
            y_part,
            *(group + [group[0]] * pad),
            out,
            *_meta_args(meta),
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
