"""Helpers the multi-LoRA Triton kernels share (`triton_lora_shrink`, `triton_lora_expand`,
`triton_lora_decode`, the fused kernels of `triton_lora_fused`).

- Several slices per launch (q/k/v, gate/up): a launch takes up to ``MAX_SLICES_PER_LAUNCH`` slices'
  pointers and sizes as separate arguments; program axis ``pid_s`` selects its slice with
  :func:`slice_ptr` and :func:`slice_columns`; :func:`check_a_slices` / :func:`check_b_slices` check on
  the host that one set of stride arguments serves every slice.
- Ranks: each slot's rank comes from ``slot_rank`` and masks the loads (:func:`rank_masks`), so a rank-8
  adapter in a max-rank-64 buffer moves rank-8 bytes.
- SGMV segments (shrink and expand): grid axis 0 has ``num_tiles = cdiv(T, BLOCK_M) + min(T, max_loras)``
  programs (:func:`num_segment_tiles`), an upper bound on the segment tiles of any grouping of T tokens,
  so the grid never depends on the batch's adapters (CUDA-graph safe). Each program maps its tile id to
  (slot, rows) from the metadata (:func:`segment_tile`); tiles past the last segment and tokens without
  an adapter do no work.
- :func:`num_sms`: grids are sized to cover the multiprocessors.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from loraplane.kernels.lora_meta import LoRAKernelMeta


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


@triton.jit
def segment_tile(
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


def num_segment_tiles(num_tokens: int, max_loras: int, block_m: int) -> int:
    return triton.cdiv(num_tokens, block_m) + min(num_tokens, max_loras)


def segment_meta_args(meta: LoRAKernelMeta) -> tuple[torch.Tensor, ...]:
    return (
        meta.token_indices_sorted,
        meta.active_num_tokens,
        meta.active_slot_start,
        meta.active_slots,
        meta.slot_rank,
    )
