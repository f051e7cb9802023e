"""Triton fused multi-LoRA for small batches: ``out += (x @ A^T) @ B^T`` in one launch.

For decode-sized batches the shrink/expand pair is dominated by fixed costs (zeroing ``y``, two
launches, each starting with a chain of dependent metadata loads that miss a cold L2). Two kernels do
the whole delta in one launch; tokens without an adapter return at once, and the grid depends only on
the number of tokens (CUDA-graph safe).

- One-role (:mod:`~loraplane.kernels.triton_lora_fused_one_role`, no scratch): program ``(t, j, s)``
  computes ``y = x[t] @ A_s[slot, :rank]^T`` in registers (a GEMV over ``in``), then adds
  ``y @ B_s[slot, cols_j, :rank]^T`` into its share ``cols_j`` of slice s's columns. Each of a token's
  ``split_n`` column programs recomputes the shrink (the repeats hit L2).
- Producer/consumer (:mod:`~loraplane.kernels.triton_lora_fused_coop`): per (token, slice), ``split_k``
  producers each compute the shrink over one K share and publish an fp32 partial of y
  (``meta.coop_partials``), then count themselves in (``meta.coop_counters``, release); ``split_n``
  consumers request their first B and ``out`` tiles, wait for the count (acquire), sum the partials in a
  fixed order and expand their column share. The last consumer to leave zeroes the counters for the next
  launch. Every adapter byte is read once and spread evenly over many small programs, so all SMs stream.
  Producers take the lowest program ids and never wait, so the consumers' wait ends whatever is resident
  (blocks start in program-id order; the CPU interpreter runs programs in that order too).

Both are made of the GEMV pieces of :mod:`~loraplane.kernels.triton_lora_fused_gemv`, whose loads are
double-buffered by hand (the next tile is requested before the current one is used), so a program waits
on few DRAM round trips. This module holds their launch configuration and the launcher choosing
between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton

from loraplane.kernels.lora_meta import (
    COOP_MAX_TOKENS,
    COOP_PARTIALS,
    MAX_SLICES_PER_LAUNCH,
    LoRAKernelMeta,
)
from loraplane.kernels.triton_lora_common import check_a_slices, check_b_slices, num_sms
from loraplane.kernels.triton_lora_fused_coop import launch_coop
from loraplane.kernels.triton_lora_fused_one_role import launch_one_role

TUNED_MAX_TOKENS = 256  # the batch sizes its configs were measured for (add_lora uses it up to 128)
COOP_PAIRS = 64  # single-slice (token, slice) pairs up to which the producer/consumer kernel is the default


@dataclass(frozen=True)
class FusedConfig:
    """A launch of :func:`fused_add_lora`.

    ``split_k == 0``: ``split_n`` column programs per (token, slice), each computing the token's
    whole shrink itself (the one-role kernel). ``split_k > 0`` (a power of two): ``split_k``
    producer programs per (token, slice), each one K share of the shrink, and ``split_n`` consumer
    programs, each one column share of the expand (the producer/consumer kernel).
    """

    split_n: int
    block_k: int
    block_n: int
    num_warps: int = 16
    split_k: int = 0


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
        if cfg.split_k:
            launch_coop(args, shape_args, meta, num_tokens, num_slices, max_rank, cfg, blocks)
        else:
            launch_one_role(args, shape_args, num_tokens, num_slices, cfg, blocks)
