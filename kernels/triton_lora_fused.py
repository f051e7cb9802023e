"""Triton fused multi-LoRA for small batches: ``out += (x @ A^T) @ B^T`` in one launch.

For decode-sized batches the shrink/expand pair is dominated by fixed costs (zeroing ``y``, two
launches, each starting with a chain of dependent metadata loads that miss a cold L2). Two kernels do
the whole delta in one launch; tokens without an adapter return at once, and the grid depends only on
the number of tokens (CUDA-graph safe).

- One-role (:func:`_fused_kernel`, no scratch): program ``(t, j, s)`` computes ``y = x[t] @
  A_s[slot, :rank]^T`` in registers (a GEMV over ``in``), then adds ``y @ B_s[slot, cols_j, :rank]^T``
  into its share ``cols_j`` of slice s's columns. Each of a token's ``split_n`` column programs
  recomputes the shrink (the repeats hit L2).
- Producer/consumer (:func:`_coop_kernel`): per (token, slice), ``split_k`` producers each compute the
  shrink over one K share and publish an fp32 partial of y (``meta.coop_partials``), then count
  themselves in (``meta.coop_counters``, release); ``split_n`` consumers request their first B and
  ``out`` tiles, wait for the count (acquire), sum the partials in a fixed order and expand their
  column share. The last consumer to leave zeroes the counters for the next launch. Every adapter
  byte is read once and spread evenly over many small programs, so all SMs stream. Producers take
  the lowest program ids and never wait, so the consumers' wait ends whatever is resident (blocks
  start in program-id order; the CPU interpreter runs programs in that order too).

Loads are double-buffered by hand (the next tile is requested before the current one is used), so a
program waits on few DRAM round trips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from loraplane.kernels.lora_meta import COOP_MAX_TOKENS, COOP_PARTIALS, LoRAKernelMeta
from loraplane.kernels.triton_lora import (
    MAX_SLICES_PER_LAUNCH,
    check_a_slices,
    check_b_slices,
    num_sms,
    rank_masks,
    slice_columns,
    slice_ptr,
)

TUNED_MAX_TOKENS = 256  # the batch sizes its configs were measured for (add_lora uses it up to 128)
COOP_PAIRS = 64  # single-slice (token, slice) pairs up to which the producer/consumer kernel is the default


@dataclass(frozen=True)
class FusedConfig:
    """A launch of :func:`fused_add_lora`.

    ``split_k == 0``: ``split_n`` column programs per (token, slice), each computing the token's
    whole shrink itself (:func:`_fused_kernel`). ``split_k > 0`` (a power of two): ``split_k``
    producer programs per (token, slice), each one K share of the shrink, and ``split_n`` consumer
    programs, each one column share of the expand (:func:`_coop_kernel`).
    """

    split_n: int
    block_k: int
    block_n: int
    num_warps: int = 16
    split_k: int = 0


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
    b_cur, o_cur = _expand_first_tiles(
        b_rows, out_row, rank, max_rank, n_begin, n_end, stride_bn, stride_on, BLOCK_R, BLOCK_N
    )
    a_rows = a_ptr + slot64 * stride_al + offs_r[:, None] * stride_ar
    x_row = x_ptr + tok64 * stride_xt
    y = _shrink_range(a_rows, x_row, rank, 0, in_features, stride_ak, stride_xk, BLOCK_R, BLOCK_K)
    _expand_range(
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


@triton.jit
def _shrink_range(
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
def _expand_first_tiles(
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
def _expand_range(
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
        y = _shrink_range(
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
        b_cur, o_cur = _expand_first_tiles(
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
        _expand_range(
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


def fused_config(
    num_tokens: int,
    num_slices: int,
    max_rank: int,
    in_features: int,
    max_n: int,
    device: torch.device,
    split_n: int | None = None,
    tile_elements: int | None = None,
    num_warps: int | None = None,
    split_k: int | None = None,
) -> FusedConfig:
    """The launch for a batch shape (H200: benchmarks/results/kernels_lora_decode_h200.json and
    kernels_lora_fused_sweep_h200.json).

    Producer/consumer for up to ``COOP_PAIRS`` (token, slice) pairs, and for any multi-slice launch
    (q/k/v, gate/up) within the workspace: about six programs of 4 warps per SM in all, so every SM
    streams about the same bytes with many loads in flight. Per pair that is 8 K shares and 4
    column shares down to 1 and 1 as the pairs grow (8 column shares for few pairs or ranks above
    16). Otherwise the one-role kernel: one program per SM of 16 warps (~120 registers a thread on
    sm_90, double-buffered 16K-element tiles, 16-byte loads), its columns split until the grid fills
    the SMs, but below ``2 * out / in`` as each extra column program re-reads the token's ``A``.
    """
    block_r = triton.next_power_of_2(max_rank)
    pairs = max(1, num_tokens * num_slices)
    per_pair = max(2, 6 * num_sms(device) // pairs)  # programs per pair for ~6 per SM
    if split_k is None:
        coop = num_tokens <= COOP_MAX_TOKENS and (pairs <= COOP_PAIRS or num_slices > 1)
        split_k = 0
        if coop:
            split_k = 8 if per_pair >= 12 else 4 if per_pair >= 8 else 2 if per_pair >= 4 else 1
            split_k = min(split_k, COOP_PARTIALS // block_r)
    if split_n is None:
        if split_k:
            split_n = 1 if per_pair < 4 else 2 if per_pair < 8 else 4
            if pairs * 8 <= num_sms(device) or block_r > 16:
                split_n = 8
        else:
            wanted = max(1, num_sms(device) // pairs)
            split_n = max(1, min(8, wanted, (2 * max_n) // in_features))
    if num_warps is None:
        num_warps = 4 if split_k else 16
    if tile_elements is None:
        tile_elements = 16384 if not split_k or block_r > 16 else 8192
    tile = max(16, tile_elements // block_r)
    block_k = min(tile, triton.next_power_of_2(triton.cdiv(in_features, max(1, split_k))))
    block_n = min(tile, triton.next_power_of_2(triton.cdiv(max_n, split_n)))
    return FusedConfig(
        split_n=split_n,
        block_k=max(16, block_k),
        block_n=max(16, block_n),
        num_warps=num_warps,
        split_k=split_k,
    )


def fused_add_lora(
    out: torch.Tensor,
    x: torch.Tensor,
    lora_a: Sequence[torch.Tensor],
    lora_b: Sequence[torch.Tensor],
    meta: LoRAKernelMeta,
    slice_offsets: Sequence[int],
    config: FusedConfig | None = None,
) -> None:
    """Launch the fused kernel (contract: :func:`loraplane.kernels.lora_ops.add_lora`).

    Grid ``(T, split_n, S)`` for the one-role kernel, ``T * S * (split_k + split_n)`` programs (the
    producers first) for the producer/consumer kernel, whose partials and counters live in ``meta``.
    """
    num_tokens, in_features = x.shape
    max_rank = lora_a[0].shape[1]
    block_r = triton.next_power_of_2(max_rank)
    a_strides, b_inner = check_a_slices(lora_a), check_b_slices(lora_b)
    for first in range(0, len(lora_a), MAX_SLICES_PER_LAUNCH):
        a_group = list(lora_a[first : first + MAX_SLICES_PER_LAUNCH])
        b_group = list(lora_b[first : first + MAX_SLICES_PER_LAUNCH])
        num_slices, pad = len(a_group), MAX_SLICES_PER_LAUNCH - len(a_group)
        widths = [b.shape[1] for b in b_group] + [0] * pad
        cfg = config or fused_config(num_tokens, num_slices, max_rank, in_features, max(widths), x.device)
        args = [
            x,
            *(a_group + [a_group[0]] * pad),
            *(b_group + [b_group[0]] * pad),
            out,
            meta.token_slots,
            meta.slot_rank,
        ]
        shape_args = [
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
        ]
        blocks = dict(BLOCK_R=block_r, BLOCK_K=cfg.block_k, BLOCK_N=cfg.block_n, num_warps=cfg.num_warps)
        if not cfg.split_k:
            _fused_kernel[(num_tokens, cfg.split_n, num_slices)](
                *args, *shape_args, SPLIT_N=cfg.split_n, **blocks
            )
            continue
        if num_tokens * num_slices > meta.coop_counters.shape[1] or cfg.split_k * block_r > COOP_PARTIALS:
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
