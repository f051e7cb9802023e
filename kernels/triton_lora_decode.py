"""Triton multi-LoRA for decode-sized batches: split-K shrink into fp32 partials, then a tiled expand.

Tokens come in tiles of one slot (at most ``TILE_M`` tokens, listed on the host by
:class:`~loraplane.kernels.lora_meta.LoRAKernelMeta`), so each adapter's weights are read once per tile
however many of its tokens the batch holds. Two launches, each a few dependent DRAM round trips:

- shrink, program ``(tile, k_split, slice)``: loads the tile's slot, rank and tokens (one round
  trip), then its ``A`` rows and ``x`` rows over one ``in / SPLIT_K`` share of the reduction (a second),
  and stores ``x @ A^T`` for that share into ``partial[slice, k_split, token, :]``. Every (share,
  token) pair with an adapter is written by exactly one program: no zeroing, no atomics.
- expand, program ``(tile, n_block, slice)``: loads the tile, then the ``SPLIT_K`` partials of its
  tokens, its ``B`` block and its ``out`` block together, and adds ``sum(partials) @ B^T`` into ``out``.

Unused tiles (slot -1) return after one load, so tokens without an adapter cost nothing. The grid
depends only on the number of tokens (``num_tiles_bound``), never on the batch's adapters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from loraplane.kernels.dispatch import dot_precision
from loraplane.kernels.lora_meta import MAX_SLICES_PER_LAUNCH, TILE_M, LoRAKernelMeta, num_tiles_bound
from loraplane.kernels.triton_lora_common import (
    check_a_slices,
    check_b_slices,
    num_sms,
    rank_masks,
    slice_columns,
    slice_ptr,
)


@dataclass(frozen=True)
class DecodeConfig:
    split_k: int  # shrink programs per (tile, slice), each reducing over a share of ``in``
    block_k: int  # shrink reduction step (a share is a whole number of steps)
    block_n: int  # expand output columns per program
    shrink_warps: int = 4
    expand_warps: int = 4

    def __post_init__(self) -> None:
        for name in ("split_k", "block_k", "block_n"):
            value = getattr(self, name)
            if value < 1 or value & (value - 1):
                raise ValueError(f"DecodeConfig.{name} must be a power of two, got {value}")
        if self.block_k < 16 or self.block_n < 16:
            raise ValueError(f"block_k and block_n must be >= 16 (tl.dot), got {self}")


@triton.jit
def _tile(tile, tile_slot_ptr, tile_rank_ptr, tile_tokens_ptr, max_rank, BLOCK_M: tl.constexpr):
    """Tile ``tile``'s (slot, rank clamped to ``max_rank``, token mask, token rows as int64; 0 if padding)."""
    tok = tl.load(tile_tokens_ptr + tile * BLOCK_M + tl.arange(0, BLOCK_M))
    rank = tl.minimum(tl.load(tile_rank_ptr + tile), max_rank)
    return tl.load(tile_slot_ptr + tile), rank, tok >= 0, tl.where(tok >= 0, tok, 0).to(tl.int64)


@triton.jit
def _shrink_kernel(
    x_ptr,
    a0_ptr,
    a1_ptr,
    a2_ptr,
    partial_ptr,
    tile_slot_ptr,
    tile_rank_ptr,
    tile_tokens_ptr,
    in_features,
    max_rank,
    k_share,
    stride_xt,
    stride_xk,
    stride_al,
    stride_ar,
    stride_ak,
    stride_ps,
    stride_pk,
    stride_pt,
    BLOCK_M: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    tile, pid_k, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    slot, rank, m_mask, tok64 = _tile(tile, tile_slot_ptr, tile_rank_ptr, tile_tokens_ptr, max_rank, BLOCK_M)
    if slot < 0:
        return
    a_ptr = slice_ptr(pid_s, a0_ptr, a1_ptr, a2_ptr)
    offs_r = tl.arange(0, BLOCK_R)
    r_mask = offs_r < rank
    offs_k = tl.arange(0, BLOCK_K)
    x_rows = x_ptr + tok64[:, None] * stride_xt
    a_rows = a_ptr + slot.to(tl.int64) * stride_al + offs_r[None, :] * stride_ar
    acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    k_begin = pid_k * k_share
    k_end = tl.minimum(k_begin + k_share, in_features)
    for k0 in range(k_begin, k_end, BLOCK_K):
        k_idx = k0 + offs_k
        k_mask = k_idx < k_end
        xt = tl.load(x_rows + k_idx[None, :] * stride_xk, mask=m_mask[:, None] & k_mask[None, :], other=0.0)
        at = tl.load(a_rows + k_idx[:, None] * stride_ak, mask=k_mask[:, None] & r_mask[None, :], other=0.0)
        acc += tl.dot(xt, at, input_precision=PRECISION)
    p_ptrs = (
        partial_ptr + pid_s * stride_ps + pid_k * stride_pk + tok64[:, None] * stride_pt + offs_r[None, :]
    )
    tl.store(p_ptrs, acc, mask=m_mask[:, None])


@triton.jit
def _expand_kernel(
    partial_ptr,
    b0_ptr,
    b1_ptr,
    b2_ptr,
    out_ptr,
    tile_slot_ptr,
    tile_rank_ptr,
    tile_tokens_ptr,
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
    stride_ps,
    stride_pk,
    stride_pt,
    stride_bn,
    stride_br,
    stride_ot,
    stride_on,
    SPLIT_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    tile, pid_n, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    slot, rank, m_mask, tok64 = _tile(tile, tile_slot_ptr, tile_rank_ptr, tile_tokens_ptr, max_rank, BLOCK_M)
    n_out, col0, stride_bl = slice_columns(
        pid_s, n0, n1, n2, off0, off1, off2, stride_bl0, stride_bl1, stride_bl2
    )
    if slot < 0:
        return
    if pid_n * BLOCK_N >= n_out:
        return
    b_ptr = slice_ptr(pid_s, b0_ptr, b1_ptr, b2_ptr)
    offs_r = tl.arange(0, BLOCK_R)
    r_mask, rb_mask = rank_masks(rank, max_rank, BLOCK_R)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < n_out
    out_ptrs = out_ptr + tok64[:, None] * stride_ot + (col0 + offs_n)[None, :] * stride_on
    out_mask = m_mask[:, None] & n_mask[None, :]
    # All loads below depend only on the tile: they are in flight together.
    acc = tl.load(out_ptrs, mask=out_mask, other=0.0).to(tl.float32)
    b_ptrs = b_ptr + slot.to(tl.int64) * stride_bl + offs_n[None, :] * stride_bn + offs_r[:, None] * stride_br
    bt = tl.load(b_ptrs, mask=rb_mask[:, None] & n_mask[None, :], other=0.0)
    p_rows = partial_ptr + pid_s * stride_ps + tok64[:, None] * stride_pt + offs_r[None, :]
    p_mask = m_mask[:, None] & r_mask[None, :]
    if SPLIT_K == 1:
        y = tl.load(p_rows, mask=p_mask, other=0.0)
    else:
        offs_k = tl.arange(0, SPLIT_K)
        p_ptrs = p_rows[None, :, :] + offs_k[:, None, None] * stride_pk
        y = tl.sum(tl.load(p_ptrs, mask=p_mask[None, :, :], other=0.0), axis=0)
    bt = tl.where(r_mask[:, None], bt, 0.0)
    acc += tl.dot(y.to(bt.dtype), bt, input_precision=PRECISION)
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=out_mask)


def decode_config(
    num_tokens: int, num_slices: int, max_loras: int, in_features: int, device: torch.device
) -> DecodeConfig:
    """Split the shrink's reduction until the grid covers the SMs about 4 times (shares >= 256)."""
    tiles = num_tiles_bound(num_tokens, max_loras) * num_slices
    wanted = max(1, 4 * num_sms(device) // max(1, tiles))
    split_k = min(triton.next_power_of_2(wanted), max(1, triton.next_power_of_2(in_features) // 256), 16)
    share = triton.next_power_of_2(triton.cdiv(in_features, split_k))
    return DecodeConfig(split_k=split_k, block_k=min(share, 512), block_n=256)


def decode_add_lora(
    out: torch.Tensor,
    x: torch.Tensor,
    lora_a: Sequence[torch.Tensor],
    lora_b: Sequence[torch.Tensor],
    meta: LoRAKernelMeta,
    slice_offsets: Sequence[int],
    config: DecodeConfig | None = None,
) -> None:
    """Shrink then expand (contract: :func:`kernels.lora_ops.add_lora`); ``T <= meta.max_tiled_tokens``."""
    num_tokens, in_features = x.shape
    if num_tokens > meta.max_tiled_tokens:
        raise ValueError(f"{num_tokens} tokens exceed the tile table ({meta.max_tiled_tokens})")
    max_rank = lora_a[0].shape[1]
    a_strides, b_inner = check_a_slices(lora_a), check_b_slices(lora_b)
    num_tiles = num_tiles_bound(num_tokens, meta.max_loras)
    block_r = max(16, triton.next_power_of_2(max_rank))
    precision = dot_precision(x.dtype)
    tiles = (meta.tile_slot, meta.tile_rank, meta.tile_tokens)
    for first in range(0, len(lora_a), MAX_SLICES_PER_LAUNCH):
        a_group = list(lora_a[first : first + MAX_SLICES_PER_LAUNCH])
        b_group = list(lora_b[first : first + MAX_SLICES_PER_LAUNCH])
        pad = MAX_SLICES_PER_LAUNCH - len(a_group)
        cfg = config or decode_config(num_tokens, len(a_group), meta.max_loras, in_features, x.device)
        partial = torch.empty(len(a_group), cfg.split_k, num_tokens, block_r, device=x.device)
        k_share = triton.cdiv(triton.cdiv(in_features, cfg.split_k), cfg.block_k) * cfg.block_k
        _shrink_kernel[(num_tiles, cfg.split_k, len(a_group))](
            x,
            *(a_group + [a_group[0]] * pad),
            partial,
            *tiles,
            in_features,
            max_rank,
            k_share,
            *x.stride(),
            *a_strides,
            *partial.stride()[:3],
            BLOCK_M=TILE_M,
            BLOCK_R=block_r,
            BLOCK_K=cfg.block_k,
            PRECISION=precision,
            num_warps=cfg.shrink_warps,
        )
        widths = [b.shape[1] for b in b_group] + [0] * pad
        _expand_kernel[(num_tiles, triton.cdiv(max(widths), cfg.block_n), len(a_group))](
            partial,
            *(b_group + [b_group[0]] * pad),
            out,
            *tiles,
            max_rank,
            *widths,
            *(list(slice_offsets[first : first + MAX_SLICES_PER_LAUNCH]) + [0] * pad),
            *([b.stride(0) for b in b_group] + [0] * pad),
            *partial.stride()[:3],
            *b_inner,
            *out.stride(),
            SPLIT_K=cfg.split_k,
            BLOCK_M=TILE_M,
            BLOCK_R=block_r,
            BLOCK_N=cfg.block_n,
            PRECISION=precision,
            num_warps=cfg.expand_warps,
        )
