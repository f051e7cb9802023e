"""The GEMV pieces both fused multi-LoRA kernels are made of (`triton_lora_fused_one_role`,
`triton_lora_fused_coop`): a shrink over a K range into fp32 registers, and an expand over a column
range that starts from tiles requested before the shrink.

Loads are double-buffered by hand (the next tile is requested before the current one is used), so a
program waits on few DRAM round trips.
"""

from __future__ import annotations

import triton
import triton.language as tl

from loraplane.kernels.triton_lora_common import rank_masks


@triton.jit
def shrink_range(
    a_rows, x_row, rank, k_begin, k_end, stride_ak, stride_xk, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr
):
    """``y[:rank] = A[:rank, k_begin:k_end] @ x[k_begin:k_end]`` in fp32 (next tile requested early)."""
    offs_k = tl.arange(0, BLOCK_K)
    r_mask = tl.arange(0, BLOCK_R) < rank
    k_idx = k_begin + offs_k
    k_mask = k_idx < k_end
    a_cur = tl.load(a_rows + k_idx[None, :] * stride_ak, mask=r_mask[:, None] & k_mask[None, :], other=0.0)
    x_cur = tl.load(x_row + k_idx * stride_xk, mask=k_mask, other=0.0)
    y = tl.zeros((BLOCK_R,), dtype=tl.float32)
    for k0 in range(k_begin + BLOCK_K, k_end + BLOCK_K, BLOCK_K):
        k_idx = k0 + offs_k
        k_mask = k_idx < k_end
        a_nxt = tl.load(
            a_rows + k_idx[None, :] * stride_ak, mask=r_mask[:, None] & k_mask[None, :], other=0.0
        )
        x_nxt = tl.load(x_row + k_idx * stride_xk, mask=k_mask, other=0.0)
        y += tl.sum(a_cur.to(tl.float32) * x_cur.to(tl.float32)[None, :], axis=1)
        a_cur, x_cur = a_nxt, x_nxt
    return y


@triton.jit
def expand_first_tiles(
    b_rows,
    out_row,
    rank,
    max_rank,
    n_begin,
    n_end,
    stride_bn,
    stride_on,
    BLOCK_R: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """The first B and ``out`` tiles of columns ``[n_begin, n_end)`` (they do not depend on y)."""
    _, rb_mask = rank_masks(rank, max_rank, BLOCK_R)
    n_idx = n_begin + tl.arange(0, BLOCK_N)
    n_mask = n_idx < n_end
    b_cur = tl.load(b_rows + n_idx[:, None] * stride_bn, mask=n_mask[:, None] & rb_mask[None, :], other=0.0)
    o_cur = tl.load(out_row + n_idx * stride_on, mask=n_mask, other=0.0)
    return b_cur, o_cur


@triton.jit
def expand_range(
    b_rows,
    out_row,
    y,
    b_cur,
    o_cur,
    rank,
    max_rank,
    n_begin,
    n_end,
    stride_bn,
    stride_on,
    BLOCK_R: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """``out[n_begin:n_end] += B[n_begin:n_end, :rank] @ y[:rank]``, from the first tiles already loaded."""
    r_mask, rb_mask = rank_masks(rank, max_rank, BLOCK_R)
    offs_n = tl.arange(0, BLOCK_N)
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
        tl.store(out_row + n_idx * stride_on, result.to(out_row.dtype.element_ty), mask=n_idx < n_end)
        b_cur, o_cur = b_nxt, o_nxt
