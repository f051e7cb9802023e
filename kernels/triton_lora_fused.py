"""Triton fused multi-LoRA for small batches: ``out += (x @ A^T) @ B^T`` in one launch.

For decode-sized batches the shrink/expand pair is dominated by fixed costs (zeroing ``y``, two
launches, each starting with a chain of dependent metadata loads that miss a cold L2). This kernel
does the whole delta in one launch with no scratch buffer: program ``(t, j, s)`` reads token t's slot
and rank, computes ``y = x[t] @ A_s[slot, :rank]^T`` in registers (a GEMV over ``in``), then adds
``y @ B_s[slot, cols_j, :rank]^T`` into its share ``cols_j`` of slice s's output columns. A token's
shrink is recomputed by each of its ``split_n`` column programs (the repeats hit L2); tokens without
an adapter return at once. Loads are double-buffered by hand (the next tile is requested before the
current one is used) and the first ``B``/``out`` tiles are requested before the shrink, so a program
waits on few DRAM round trips. The grid depends only on the number of tokens (CUDA-graph safe).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels.lora_meta import LoRAKernelMeta
from kernels.triton_lora import MAX_SLICES_PER_LAUNCH, check_a_slices, check_b_slices, num_sms

TUNED_MAX_TOKENS = 256  # the batch sizes its configs were measured for (add_lora uses it up to 128)
_TILE_ELEMENTS = 16384  # elements of an A or B tile per loop step: few steps, each a DRAM round trip


@dataclass(frozen=True)
class FusedConfig:
    split_n: int  # programs per (token, slice), each owning a contiguous share of the columns
    block_k: int
    block_n: int
    num_warps: int = 16


@triton.jit
def _fused_kernel(
    x_ptr,
    a0_ptr,
    a1_ptr,
    a2_ptr,
    b0_ptr,
    b1_ptr,
    b2_ptr,
    out_ptr,
    token_slots_ptr,
    slot_rank_ptr,
    in_features,
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
    stride_xt,
    stride_xk,
    stride_al,
    stride_ar,
    stride_ak,
    stride_bn,
    stride_br,
    stride_ot,
    stride_on,
    SPLIT_N: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    tok, pid_n, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    slot = tl.load(token_slots_ptr + tok)
    if slot < 0:
        return
    rank = tl.minimum(tl.load(slot_rank_ptr + slot), max_rank)
    # Integers are selected arithmetically (see triton_lora._expand_kernel for why).
    is0, is1, is2 = (pid_s == 0).to(tl.int32), (pid_s == 1).to(tl.int32), (pid_s == 2).to(tl.int32)
    n_out = n0 * is0 + n1 * is1 + n2 * is2
    col0 = off0 * is0 + off1 * is1 + off2 * is2
    stride_bl = stride_bl0 * is0 + stride_bl1 * is1 + stride_bl2 * is2
    a_ptr = a0_ptr
    b_ptr = b0_ptr
    if pid_s == 1:
        a_ptr = a1_ptr
        b_ptr = b1_ptr
    elif pid_s == 2:
        a_ptr = a2_ptr
        b_ptr = b2_ptr
    share = tl.cdiv(tl.cdiv(n_out, SPLIT_N), BLOCK_N) * BLOCK_N
    n_begin = pid_n * share
    n_end = tl.minimum(n_begin + share, n_out)
    if n_begin >= n_end:
        return
    slot64, tok64 = slot.to(tl.int64), tok.to(tl.int64)
    offs_r = tl.arange(0, BLOCK_R)
    r_mask = offs_r < rank
    # B rows are contiguous in rank: a mask at a multiple of 16 keeps its loads vectorized (the
    # sectors are read anyway); the columns in [rank, rank16) are then dropped with a select.
    rb_mask = offs_r < tl.minimum(tl.cdiv(rank, 16) * 16, max_rank)
    offs_n = tl.arange(0, BLOCK_N)
    b_rows = b_ptr + slot64 * stride_bl + offs_r[None, :] * stride_br
    out_row = out_ptr + tok64 * stride_ot + col0 * stride_on
    # The first expand tiles do not depend on y: request them before the shrink.
    n_idx = n_begin + offs_n
    n_mask = n_idx < n_end
    b_cur = tl.load(b_rows + n_idx[:, None] * stride_bn, mask=n_mask[:, None] & rb_mask[None, :], other=0.0)
    o_cur = tl.load(out_row + n_idx * stride_on, mask=n_mask, other=0.0)

    offs_k = tl.arange(0, BLOCK_K)
    a_rows = a_ptr + slot64 * stride_al + offs_r[:, None] * stride_ar
    x_row = x_ptr + tok64 * stride_xt
    k_mask = offs_k < in_features
    a_cur = tl.load(a_rows + offs_k[None, :] * stride_ak, mask=r_mask[:, None] & k_mask[None, :], other=0.0)
    x_cur = tl.load(x_row + offs_k * stride_xk, mask=k_mask, other=0.0)
    y = tl.zeros((BLOCK_R,), dtype=tl.float32)
    for k0 in range(BLOCK_K, in_features + BLOCK_K, BLOCK_K):
        k_idx = k0 + offs_k
        k_mask = k_idx < in_features
        a_mask = r_mask[:, None] & k_mask[None, :]
        a_nxt = tl.load(a_rows + k_idx[None, :] * stride_ak, mask=a_mask, other=0.0)
        x_nxt = tl.load(x_row + k_idx * stride_xk, mask=k_mask, other=0.0)
        y += tl.sum(a_cur.to(tl.float32) * x_cur.to(tl.float32)[None, :], axis=1)
        a_cur, x_cur = a_nxt, x_nxt

    for n_start in range(n_begin, n_end, BLOCK_N):
        nxt_idx = n_start + BLOCK_N + offs_n
        nxt_mask = nxt_idx < n_end
        b_nxt = tl.load(
            b_rows + nxt_idx[:, None] * stride_bn, mask=nxt_mask[:, None] & rb_mask[None, :], other=0.0
        )
        o_nxt = tl.load(out_row + nxt_idx * stride_on, mask=nxt_mask, other=0.0)
        n_idx = n_start + offs_n
        b_tile = tl.where(r_mask[None, :], b_cur.to(tl.float32), 0.0)
        delta = tl.sum(b_tile * y[None, :], axis=1)
        result = o_cur.to(tl.float32) + delta
        tl.store(out_row + n_idx * stride_on, result.to(out_ptr.dtype.element_ty), mask=n_idx < n_end)
        b_cur, o_cur = b_nxt, o_nxt


def fused_config(
    num_tokens: int,
    num_slices: int,
    max_rank: int,
    in_features: int,
    max_n: int,
    device: torch.device,
    split_n: int | None = None,
    tile_elements: int | None = None,
    num_warps: int = 16,
) -> FusedConfig:
    """About one program per SM, each moving ~32 KB per loop step (a DRAM round trip).

    At 16 warps a program needs ~120 registers a thread on sm_90 (double-buffered 16K-element tiles,
    all loads 16-byte vectors, no spills for ranks 16 to 64), so one program fits per SM; on the H200
    16 warps beat 8 by 5-10% on every decode row (benchmarks/results/kernels_h200.json, "configs").
    The columns are split until the grid fills the SMs, but each extra column program of a token
    re-reads the token's ``A`` (``rank x in``) from L2, so the split stays below ``2 * out / in``.
    """
    if split_n is None:
        wanted = max(1, num_sms(device) // max(1, num_tokens * num_slices))
        split_n = max(1, min(8, wanted, (2 * max_n) // in_features))
    block_r = triton.next_power_of_2(max_rank)
    tile = max(16, (tile_elements or _TILE_ELEMENTS) // block_r)
    block_k = min(tile, triton.next_power_of_2(in_features))
    block_n = min(tile, triton.next_power_of_2(triton.cdiv(max_n, split_n)))
    return FusedConfig(split_n=split_n, block_k=block_k, block_n=max(16, block_n), num_warps=num_warps)


def fused_add_lora(
    out: torch.Tensor,
    x: torch.Tensor,
    lora_a: Sequence[torch.Tensor],
    lora_b: Sequence[torch.Tensor],
    meta: LoRAKernelMeta,
    slice_offsets: Sequence[int],
    config: FusedConfig | None = None,
) -> None:
    """Launch the fused kernel (contract: :func:`kernels.lora_ops.add_lora`); grid ``(T, split_n, S)``."""
    num_tokens, in_features = x.shape
    max_rank = lora_a[0].shape[1]
    a_strides, b_inner = check_a_slices(lora_a), check_b_slices(lora_b)
    for first in range(0, len(lora_a), MAX_SLICES_PER_LAUNCH):
        a_group = list(lora_a[first : first + MAX_SLICES_PER_LAUNCH])
        b_group = list(lora_b[first : first + MAX_SLICES_PER_LAUNCH])
        pad = MAX_SLICES_PER_LAUNCH - len(a_group)
        widths = [b.shape[1] for b in b_group] + [0] * pad
        cfg = config or fused_config(num_tokens, len(a_group), max_rank, in_features, max(widths), x.device)
        _fused_kernel[(num_tokens, cfg.split_n, len(a_group))](
            x,
            *(a_group + [a_group[0]] * pad),
            *(b_group + [b_group[0]] * pad),
            out,
            meta.token_slots,
            meta.slot_rank,
            in_features,
            max_rank,
            *widths,
            *(list(slice_offsets[first : first + MAX_SLICES_PER_LAUNCH]) + [0] * pad),
            *([b.stride(0) for b in b_group] + [0] * pad),
            x.stride(0),
            x.stride(1),
            *a_strides,
            *b_inner,
            out.stride(0),
            out.stride(1),
            SPLIT_N=cfg.split_n,
            BLOCK_R=triton.next_power_of_2(max_rank),
            BLOCK_K=cfg.block_k,
            BLOCK_N=cfg.block_n,
            num_warps=cfg.num_warps,
        )
