"""The one-role fused multi-LoRA kernel: ``out += (x @ A^T) @ B^T`` for small batches, no scratch.

Program ``(t, j, s)`` computes ``y = x[t] @ A_s[slot, :rank]^T`` in registers (a GEMV over ``in``), then
adds ``y @ B_s[slot, cols_j, :rank]^T`` into its share ``cols_j`` of slice s's columns. Each of a
token's ``split_n`` column programs recomputes the shrink (the repeats hit L2). Tokens without an
adapter return at once. Configured and launched through :mod:`loraplane.kernels.triton_lora_fused`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import triton
import triton.language as tl

from loraplane.kernels.triton_lora_common import slice_columns, slice_ptr
from loraplane.kernels.triton_lora_fused_gemv import expand_first_tiles, expand_range, shrink_range

if TYPE_CHECKING:
    from loraplane.kernels.triton_lora_fused import FusedConfig


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
    a_ptr = slice_ptr(pid_s, a0_ptr, a1_ptr, a2_ptr)
    b_ptr = slice_ptr(pid_s, b0_ptr, b1_ptr, b2_ptr)
    n_out, col0, stride_bl = slice_columns(
        pid_s, n0, n1, n2, off0, off1, off2, stride_bl0, stride_bl1, stride_bl2
    )
    share = tl.cdiv(tl.cdiv(n_out, SPLIT_N), BLOCK_N) * BLOCK_N
    n_begin = pid_n * share
    n_end = tl.minimum(n_begin + share, n_out)
    if n_begin >= n_end:
        return
    slot64, tok64 = slot.to(tl.int64), tok.to(tl.int64)
    offs_r = tl.arange(0, BLOCK_R)
    b_rows = b_ptr + slot64 * stride_bl + offs_r[None, :] * stride_br
    out_row = out_ptr + tok64 * stride_ot + col0 * stride_on
    # The first expand tiles do not depend on y: request them before the shrink.
    b_cur, o_cur = expand_first_tiles(
        b_rows, out_row, rank, max_rank, n_begin, n_end, stride_bn, stride_on, BLOCK_R, BLOCK_N
    )
    a_rows = a_ptr + slot64 * stride_al + offs_r[:, None] * stride_ar
    x_row = x_ptr + tok64 * stride_xt
    y = shrink_range(a_rows, x_row, rank, 0, in_features, stride_ak, stride_xk, BLOCK_R, BLOCK_K)
    expand_range(
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
        BLOCK_R,
        BLOCK_N,
    )


def launch_one_role(
    args: list, shape_args: list, num_tokens: int, num_slices: int, cfg: FusedConfig, blocks: dict
) -> None:
    """Grid ``(T, split_n, S)``; ``args`` (pointers) and ``shape_args`` (sizes, strides) in the kernel's
    order, as :func:`~loraplane.kernels.triton_lora_fused.fused_add_lora` builds them."""
    _fused_kernel[(num_tokens, cfg.split_n, num_slices)](*args, *shape_args, SPLIT_N=cfg.split_n, **blocks)
