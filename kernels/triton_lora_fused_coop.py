"""The producer/consumer fused multi-LoRA kernel: ``out += (x @ A^T) @ B^T`` for small batches, every
adapter byte read once.

Per (token, slice), ``split_k`` producers each compute the shrink over one K share and publish an fp32
partial of y (``meta.coop_partials``), then count themselves in (``meta.coop_counters``, release);
``split_n`` consumers request their first B and ``out`` tiles, wait for the count (acquire), sum the
partials in a fixed order and expand their column share. The last consumer to leave zeroes the counters
for the next launch. Every adapter byte is read once and spread evenly over many small programs, so all
SMs stream. Producers take the lowest program ids and never wait, so the consumers' wait ends whatever
is resident (blocks start in program-id order; the CPU interpreter runs programs in that order too).
Configured and launched through :mod:`loraplane.kernels.triton_lora_fused`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import triton
import triton.language as tl

from loraplane.kernels.lora_meta import COOP_PARTIALS, LoRAKernelMeta
from loraplane.kernels.triton_lora_common import slice_columns, slice_ptr
from loraplane.kernels.triton_lora_fused_gemv import expand_first_tiles, expand_range, shrink_range

if TYPE_CHECKING:
    from loraplane.kernels.triton_lora_fused import FusedConfig


@triton.jit
def _coop_kernel(
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
    partial_ptr,
    arrive_ptr,
    depart_ptr,
    num_tokens,
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
    NUM_SLICES: tl.constexpr,
    SPLIT_K: tl.constexpr,
    SPLIT_N: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    num_producers = num_tokens * NUM_SLICES * SPLIT_K
    is_producer = pid < num_producers
    if is_producer:
        pair, piece = pid // SPLIT_K, pid % SPLIT_K
    else:
        pair, piece = (pid - num_producers) // SPLIT_N, (pid - num_producers) % SPLIT_N
    tok, pid_s = pair // NUM_SLICES, pair % NUM_SLICES
    slot = tl.load(token_slots_ptr + tok)
    if slot < 0:
        return
    rank = tl.minimum(tl.load(slot_rank_ptr + slot), max_rank)
    a_ptr = slice_ptr(pid_s, a0_ptr, a1_ptr, a2_ptr)
    b_ptr = slice_ptr(pid_s, b0_ptr, b1_ptr, b2_ptr)
    n_out, col0, stride_bl = slice_columns(
        pid_s, n0, n1, n2, off0, off1, off2, stride_bl0, stride_bl1, stride_bl2
    )
    slot64, tok64 = slot.to(tl.int64), tok.to(tl.int64)
    offs_r = tl.arange(0, BLOCK_R)
    partial_rows = partial_ptr + pair.to(tl.int64) * (SPLIT_K * BLOCK_R)
    if is_producer:
        # Producer: one K share of the shrink, published as an fp32 partial of y.
        share = tl.cdiv(tl.cdiv(in_features, SPLIT_K), BLOCK_K) * BLOCK_K
        k_begin = piece * share
        a_rows = a_ptr + slot64 * stride_al + offs_r[:, None] * stride_ar
        x_row = x_ptr + tok64 * stride_xt
        y = shrink_range(
            a_rows,
            x_row,
            rank,
            k_begin,
            tl.minimum(k_begin + share, in_features),
            stride_ak,
            stride_xk,
            BLOCK_R,
            BLOCK_K,
        )
        tl.store(partial_rows + piece * BLOCK_R + offs_r, y)
        tl.debug_barrier()  # every thread's share of y is stored before the release below
        tl.atomic_add(arrive_ptr + pair, 1, sem="release", scope="gpu")
    else:
        # Consumer: one column share of the expand, once all SPLIT_K partials have arrived.
        share = tl.cdiv(tl.cdiv(n_out, SPLIT_N), BLOCK_N) * BLOCK_N
        n_begin = piece * share
        n_end = tl.minimum(n_begin + share, n_out)
        b_rows = b_ptr + slot64 * stride_bl + offs_r[None, :] * stride_br
        out_row = out_ptr + tok64 * stride_ot + col0 * stride_on
        b_cur, o_cur = expand_first_tiles(
            b_rows, out_row, rank, max_rank, n_begin, n_end, stride_bn, stride_on, BLOCK_R, BLOCK_N
        )
        arrived = tl.atomic_add(arrive_ptr + pair, 0, sem="acquire", scope="gpu")
        while arrived < SPLIT_K:
            arrived = tl.atomic_add(arrive_ptr + pair, 0, sem="acquire", scope="gpu")
        offs_p = tl.arange(0, SPLIT_K)
        parts = tl.load(partial_rows + offs_p[:, None] * BLOCK_R + offs_r[None, :], volatile=True)
        y = tl.sum(parts, axis=0)  # a fixed order: the result does not depend on arrival order
        # The last consumer of the pair to have read the partials resets both counters for the next
        # launch (the next kernel on the stream starts after this one ends).
        if tl.atomic_add(depart_ptr + pair, 1, sem="acq_rel", scope="gpu") == SPLIT_N - 1:
            tl.atomic_xchg(arrive_ptr + pair, 0, sem="relaxed", scope="gpu")
            tl.atomic_xchg(depart_ptr + pair, 0, sem="relaxed", scope="gpu")
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


def launch_coop(
    args: list,
    shape_args: list,
    meta: LoRAKernelMeta,
    num_tokens: int,
    num_slices: int,
    max_rank: int,
    cfg: FusedConfig,
    blocks: dict,
) -> None:
    """``T * S * (split_k + split_n)`` programs, the producers first; the partials and counters live in
    ``meta``. ``args`` (pointers) and ``shape_args`` (sizes, strides) in the kernel's order, as
    :func:`~loraplane.kernels.triton_lora_fused.fused_add_lora` builds them."""
    if (
        num_tokens * num_slices > meta.coop_counters.shape[1]
        or cfg.split_k * blocks["BLOCK_R"] > COOP_PARTIALS
    ):
        raise ValueError(
            f"split_k={cfg.split_k} at rank {max_rank} for {num_tokens} tokens x {num_slices} slices "
            f"exceeds the producer/consumer workspace"
        )
    arrive, depart = meta.coop_counters
    _coop_kernel[(num_tokens * num_slices * (cfg.split_k + cfg.split_n),)](
        *args,
        meta.coop_partials,
        arrive,
        depart,
        num_tokens,
        *shape_args,
        NUM_SLICES=num_slices,
        SPLIT_K=cfg.split_k,
        SPLIT_N=cfg.split_n,
        **blocks,
    )
