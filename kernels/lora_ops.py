"""Multi-LoRA shrink/expand ops: Triton kernels on CUDA, PyTorch references elsewhere.

Weights are stacked per layer and slice: A ``[max_loras, max_rank, in]``, B ``[max_loras, out_i,
max_rank]`` (scaling folded into B when the adapter is loaded). Tokens are grouped by slot through
:class:`~loraplane.kernels.lora_meta.LoRAKernelMeta`; tokens with slot -1 are never touched. See
:mod:`loraplane.kernels.dispatch` for when the Triton kernels run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from loraplane.kernels.dispatch import batch_invariant, use_triton
from loraplane.kernels.lora_meta import LoRAKernelMeta

# add_lora's paths by token count (H200, benchmarks/results/kernels_lora_decode_h200.json): the one-launch
# fused kernels up to FUSED_MAX_TOKENS (each token's adapter streamed by its own programs: best while
# tokens have distinct adapters), the tiled decode kernels up to DECODE_MAX_TOKENS (weights read once
# per 16-token tile of one adapter: best once adapters are shared), the SGMV shrink/expand beyond.
FUSED_MAX_TOKENS = 128
DECODE_MAX_TOKENS = 1024


def lora_shrink_ref(
    x: torch.Tensor, lora_a: Sequence[torch.Tensor], y: torch.Tensor, meta: LoRAKernelMeta, scale: float = 1.0
) -> None:
    """Reference shrink: ``y[i, t, :r] = scale * x[t] @ A_i[slot(t), :r]^T``.

    Semantics::

        for i, A in enumerate(lora_a):
            for t in range(T):
                s = slot(t)                      # -1: base only, y[:, t] untouched
                if s >= 0:
                    r = min(slot_rank[s], max_rank)
                    y[i, t, :r] = scale * (x[t] @ A[s, :r].T)   # fp32 accumulation
                    y[i, t, r:] = 0              # the Triton kernel leaves these unspecified

    Shape:
        x: [T, in]
        lora_a[i]: [max_loras, max_rank, in]
        y: [num_slices, T, max_rank] fp32 (written)
    """
    max_rank = y.shape[2]
    for slot, rank, tokens in _slot_segments(meta, x.shape[0], max_rank):
        xs = _rows(x, tokens).float()
        a_cat = torch.cat([a[slot, :rank] for a in lora_a]).float()  # one matmul for all slices
        part = torch.zeros(xs.shape[0], len(lora_a), max_rank, device=y.device)
        part[:, :, :rank] = (scale * (xs @ a_cat.t())).view(xs.shape[0], len(lora_a), rank)
        part = part.transpose(0, 1)
        if tokens is None:
            y.copy_(part)
        else:
            y.index_copy_(1, tokens, part)


def lora_expand_ref(
    y: torch.Tensor,
    lora_b: Sequence[torch.Tensor],
    out: torch.Tensor,
    meta: LoRAKernelMeta,
    slice_offsets: Sequence[int] | None = None,
    add_inputs: bool = True,
) -> None:
    """Reference expand: ``out[t, off_i:off_i+out_i] (+)= y[i, t, :r] @ B_i[slot(t), :, :r]^T``.

    Semantics::

        for i, B in enumerate(lora_b):
            for t in range(T):
                s = slot(t)                      # -1: out[t] untouched
                if s >= 0:
                    r = min(slot_rank[s], max_rank)
                    delta = y[i, t, :r] @ B[s, :, :r].T        # fp32 accumulation
                    cols = slice(off_i, off_i + out_i)
                    out[t, cols] = out[t, cols] + delta if add_inputs else delta

    Shape:
        y: [num_slices, T, max_rank] fp32
        lora_b[i]: [max_loras, out_i, max_rank]
        out: [T, sum(out_i)] (updated in place)
        slice_offsets: num_slices ints (default: running sum of out_i)
    """
    offsets = _slice_offsets(lora_b, slice_offsets)
    for slot, rank, tokens in _slot_segments(meta, out.shape[0], y.shape[2]):
        for i, b in enumerate(lora_b):
            ys = _rows(y[i], tokens)[:, :rank]
            delta = ys @ b[slot, :, :rank].float().t()
            _write_rows(out[:, offsets[i] : offsets[i] + b.shape[1]], tokens, delta, add_inputs)


def lora_shrink(
    x: torch.Tensor, lora_a: Sequence[torch.Tensor], y: torch.Tensor, meta: LoRAKernelMeta, scale: float = 1.0
) -> None:
    """Shrink (see :func:`lora_shrink_ref` for the contract); launches nothing without adapters."""
    _check_shrink(x, lora_a, y)
    if not meta.has_lora:
        return
    if use_triton(x):
        from loraplane.kernels import triton_lora_shrink

        triton_lora_shrink.shrink(x, lora_a, y, meta, scale)
    else:
        lora_shrink_ref(x, lora_a, y, meta, scale)


def lora_expand(
    y: torch.Tensor,
    lora_b: Sequence[torch.Tensor],
    out: torch.Tensor,
    meta: LoRAKernelMeta,
    slice_offsets: Sequence[int] | None = None,
    add_inputs: bool = True,
) -> None:
    """Expand (see :func:`lora_expand_ref` for the contract); launches nothing without adapters."""
    offsets = _slice_offsets(lora_b, slice_offsets)
    _check_expand(y, lora_b, out, offsets)
    if not meta.has_lora:
        return
    if use_triton(out):
        from loraplane.kernels import triton_lora_expand

        triton_lora_expand.expand(y, lora_b, out, meta, offsets, add_inputs)
    else:
        lora_expand_ref(y, lora_b, out, meta, offsets, add_inputs)


def add_lora(
    out: torch.Tensor,
    x: torch.Tensor,
    lora_a: Sequence[torch.Tensor],
    lora_b: Sequence[torch.Tensor],
    meta: LoRAKernelMeta,
    buffer: torch.Tensor | None = None,
) -> None:
    """``out += x @ A^T @ B^T`` per token and slice (scaling already folded into B).

    Path, chosen on the host from the token count (fixed per captured CUDA graph):
    CPU tensors take :func:`add_lora_ref`. In batch-invariant mode every token count takes the SGMV
    shrink (no split-K) and expand with one fixed tiling, so a token's delta does not depend on the
    batch. Otherwise up to ``FUSED_MAX_TOKENS`` tokens take the one-launch fused
    kernel of :mod:`kernels.triton_lora_fused`, up to ``DECODE_MAX_TOKENS`` the tiled decode kernels of
    :mod:`kernels.triton_lora_decode` (split-K shrink into fp32 partials, then the expand); ``buffer`` is
    unused by both. More tokens take the SGMV shrink into ``buffer`` then the expand.

    Shape:
        out: [T, sum(out_i)]; x: [T, in]
        lora_a[i]: [max_loras, max_rank, in]; lora_b[i]: [max_loras, out_i, max_rank]
        buffer: optional fp32 scratch [>= num_slices, >= T, max_rank] (a graph-stable address)
    """
    if not meta.has_lora:
        return
    num_slices, num_tokens, max_rank = len(lora_a), x.shape[0], lora_a[0].shape[1]
    if not use_triton(x):
        add_lora_ref(out, x, lora_a, lora_b, meta)
        return
    invariant = batch_invariant()
    if num_tokens <= FUSED_MAX_TOKENS and not invariant:
        from loraplane.kernels import triton_lora_fused

        triton_lora_fused.fused_add_lora(out, x, lora_a, lora_b, meta, _slice_offsets(lora_b, None))
        return
    if num_tokens <= min(meta.max_tiled_tokens, DECODE_MAX_TOKENS) and not invariant:
        from loraplane.kernels import triton_lora_decode

        triton_lora_decode.decode_add_lora(out, x, lora_a, lora_b, meta, _slice_offsets(lora_b, None))
        return
    if buffer is None:
        buffer = torch.empty(num_slices, num_tokens, max_rank, dtype=torch.float32, device=x.device)
    y = buffer[:num_slices, :num_tokens, :max_rank]
    lora_shrink(x, lora_a, y, meta)
    lora_expand(y, lora_b, out, meta)


def add_lora_ref(
    out: torch.Tensor,
    x: torch.Tensor,
    lora_a: Sequence[torch.Tensor],
    lora_b: Sequence[torch.Tensor],
    meta: LoRAKernelMeta,
) -> None:
    """Reference of :func:`add_lora` (what the CPU engine runs): one segment of tokens per active slot.

    Semantics: ``lora_shrink_ref`` then ``lora_expand_ref`` with the slot's actual rank, in two
    matmuls per active slot: the shrink of all slices against their stacked A rows, the expand
    against the block-diagonal of their B columns, added into ``out`` by ``addmm_`` (or ``index_add_``
    when the slot does not cover every row). The matmuls run in ``out``'s dtype (CPU matmuls
    accumulate in fp32; ``y`` is rounded to that dtype in between, as in the two-kernel GPU path):
    upcasting bf16 operands costs more than the products at these sizes. Few, large ops also matter
    on a busy CPU, where each multi-threaded op can wait a scheduler tick for its threads.

    In batch-invariant mode (:func:`~loraplane.kernels.dispatch.batch_invariant`) each token is its own
    ``[1, in]`` product of a batched matmul, whose shape (and so its sum order) does not depend on how
    many tokens share the slot, and the delta is added as a separate rounding.
    """
    dtype = out.dtype
    rows_alone = batch_invariant()
    for slot, rank, tokens in _slot_segments(meta, x.shape[0], lora_a[0].shape[1]):
        xs = _rows(x, tokens).to(dtype)
        a_cat = torch.cat([a[slot, :rank] for a in lora_a]).to(dtype)  # [num_slices * rank, in]
        b_diag = torch.block_diag(*[b[slot, :, :rank] for b in lora_b]).to(dtype)  # [sum(out_i), S*rank]
        if rows_alone:
            n = xs.shape[0]
            y = torch.bmm(xs[:, None, :], a_cat.t().expand(n, *a_cat.t().shape))
            delta = torch.bmm(y, b_diag.t().expand(n, *b_diag.t().shape))[:, 0]
            if tokens is None:
                out.add_(delta)
            else:
                out.index_add_(0, tokens, delta)
            continue
        y = xs @ a_cat.t()  # [n, num_slices * rank]
        if tokens is None:
            out.addmm_(y, b_diag.t())
        else:
            out.index_add_(0, tokens, y @ b_diag.t())


def _slot_segments(meta: LoRAKernelMeta, num_tokens: int, max_rank: int):
    """``(slot, rank, token indices or None)`` per active slot, read once on the host.

    ``None`` means the slot covers all ``num_tokens`` rows (no gather/scatter needed); ``rank`` is the
    slot's rank clamped to the buffers' ``max_rank``.
    """
    ranks = meta.slot_rank.tolist()
    index = meta.token_indices_sorted
    for slot, start, count in meta.segments():
        tokens = None if count == num_tokens else index[start : start + count].long()
        yield slot, min(ranks[slot], max_rank), tokens


def _rows(t: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
    return t if tokens is None else t.index_select(0, tokens)


def _write_rows(
    cols: torch.Tensor, tokens: torch.Tensor | None, delta: torch.Tensor, add_inputs: bool
) -> None:
    """``cols[tokens] (+)= delta`` with one rounding to ``cols.dtype`` (fp32 sum)."""
    if tokens is None:
        if add_inputs and cols.dtype == delta.dtype:
            cols.add_(delta)
            return
        if add_inputs:
            delta += cols  # fp32 sum, rounded once by the copy
        cols.copy_(delta)
        return
    if add_inputs:
        delta = delta + cols.index_select(0, tokens).float()
    cols.index_copy_(0, tokens, delta.to(cols.dtype))


def _slice_offsets(lora_b: Sequence[torch.Tensor], slice_offsets: Sequence[int] | None) -> list[int]:
    if slice_offsets is not None:
        return [int(o) for o in slice_offsets]
    offsets, total = [], 0
    for b in lora_b:
        offsets.append(total)
        total += b.shape[1]
    return offsets


def _check_shrink(x: torch.Tensor, lora_a: Sequence[torch.Tensor], y: torch.Tensor) -> None:
    if x.dim() != 2 or y.dim() != 3:
        raise ValueError(
            f"x must be [T, in] and y [num_slices, T, max_rank]; got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    if y.shape[0] != len(lora_a) or y.shape[1] != x.shape[0] or y.dtype != torch.float32:
        raise ValueError(f"y {tuple(y.shape)} {y.dtype} must be fp32 [{len(lora_a)}, {x.shape[0]}, max_rank]")
    for a in lora_a:
        if a.dim() != 3 or a.shape[2] != x.shape[1] or a.shape[1] != y.shape[2]:
            raise ValueError(f"lora_a slice {tuple(a.shape)} must be [max_loras, {y.shape[2]}, {x.shape[1]}]")


def _check_expand(
    y: torch.Tensor, lora_b: Sequence[torch.Tensor], out: torch.Tensor, offsets: Sequence[int]
) -> None:
    if y.dim() != 3 or y.shape[0] != len(lora_b) or y.shape[1] != out.shape[0]:
        raise ValueError(f"y {tuple(y.shape)} must be [{len(lora_b)}, {out.shape[0]}, max_rank]")
    if len(offsets) != len(lora_b):
        raise ValueError(f"{len(offsets)} slice offsets for {len(lora_b)} slices")
    for b, off in zip(lora_b, offsets, strict=True):
        if b.dim() != 3 or b.shape[2] != y.shape[2] or off + b.shape[1] > out.shape[1]:
            raise ValueError(
                f"lora_b slice {tuple(b.shape)} at offset {off} does not fit out {tuple(out.shape)}"
            )
