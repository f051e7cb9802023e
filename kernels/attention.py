"""Paged attention over a block-table KV cache: Triton on CUDA, vectorized PyTorch elsewhere.

KV cache layout: one tensor for K and one for V, each ``[num_blocks, block_size, num_kv_heads,
head_dim]``; token position ``p`` of a sequence lives at slot ``block_table[p // block_size] *
block_size + p % block_size``. Query heads map to KV heads by ``kv_head = head // (H // Hkv)`` (GQA).
See :mod:`loraplane.kernels.dispatch` for when the Triton kernels run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from loraplane.kernels import fused_ops
from loraplane.kernels.dispatch import batch_invariant, use_triton


def store_kvcache_ref(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    meta: CpuStepMeta | None = None,
) -> None:
    """Reference cache write (``meta``: this step's precomputed slots, see :func:`cpu_step_meta`).

    Semantics::

        for t in range(T):
            if slot_mapping[t] >= 0:
                block, offset = divmod(slot_mapping[t], block_size)
                k_cache[block, offset] = key[t]; v_cache[block, offset] = value[t]

    Shape:
        key, value: [T, Hkv, D]
        k_cache, v_cache: [num_blocks, block_size, Hkv, D]
        slot_mapping: [T] int, -1 = skip (padding)
    """
    k_rows, v_rows = k_cache.view(-1, *k_cache.shape[2:]), v_cache.view(-1, *v_cache.shape[2:])
    slots = unpadded_slots(slot_mapping) if meta is None else meta.slots
    if slots is not None:  # no padding (the CPU engine): no mask
        k_rows.index_copy_(0, slots, key if key.dtype == k_cache.dtype else key.to(k_cache.dtype))
        v_rows.index_copy_(0, slots, value if value.dtype == v_cache.dtype else value.to(v_cache.dtype))
        return
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    k_rows[slots] = key[keep].to(k_cache.dtype)
    v_rows[slots] = value[keep].to(v_cache.dtype)


@dataclass(frozen=True)
class CpuStepMeta:
    """Values of one forward that every layer's reference attention shares: built once per step by
    :func:`cpu_step_meta`, so the per-layer work is the KV store, one gather per cache and the attention.

    Shape: ``slots`` [T] int64 (None when some slot is padding); decode only: ``block_ids``
    [B * num_blocks] int64 (each sequence's first blocks covering ``num_positions``), ``valid``
    [B, 1, 1, num_positions] bool (position < context length).
    """

    slots: torch.Tensor | None
    num_positions: int = 0
    block_ids: torch.Tensor | None = None
    valid: torch.Tensor | None = None


def unpadded_slots(slot_mapping: torch.Tensor) -> torch.Tensor | None:
    """``slot_mapping`` as int64 when no slot is padding (-1), else None."""
    if slot_mapping.numel() and int(slot_mapping.min()) >= 0:
        return slot_mapping.long()
    return None


def cpu_step_meta(
    slot_mapping: torch.Tensor | None,
    block_tables: torch.Tensor | None = None,
    context_lens: torch.Tensor | None = None,
    block_size: int = 0,
) -> CpuStepMeta:
    """The :class:`CpuStepMeta` of a step; decode fields only with ``block_tables`` and ``context_lens``.

    It reads ``context_lens.max()`` on the host: on a GPU that is a device sync (CPU engine only).
    """
    slots = None if slot_mapping is None else unpadded_slots(slot_mapping)
    if context_lens is None or block_tables is None:
        return CpuStepMeta(slots)
    num_positions = int(context_lens.max())
    num_blocks = -(-num_positions // block_size)
    block_ids = block_tables[:, :num_blocks].reshape(-1).long()
    valid = torch.arange(num_positions, device=context_lens.device)[None, :] < context_lens[:, None]
    return CpuStepMeta(slots, num_positions, block_ids, valid[:, None, None, :])


def _gather_context(cache: torch.Tensor, block_table: torch.Tensor, num_positions: int) -> torch.Tensor:
    """[..., max_blocks] block ids -> [..., num_positions, Hkv, D] cached rows in position order."""
    num_blocks = -(-num_positions // cache.shape[1])
    ids = block_table[..., :num_blocks]
    rows = cache.index_select(0, ids.reshape(-1))  # whole-block copies: far cheaper than advanced indexing
    return rows.view(*ids.shape[:-1], -1, *cache.shape[2:])[..., :num_positions, :, :]


def paged_decode_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    meta: CpuStepMeta | None = None,
) -> torch.Tensor:
    """Reference decode attention: one query per sequence over its whole cached context (``meta``: this
    step's precomputed gather ids and mask, see :func:`cpu_step_meta`).

    Semantics::

        for b in range(B):
            K, V = cached rows of positions 0 .. context_lens[b]-1 of sequence b
            for h in range(H):
                out[b, h] = softmax(scale * q[b, h] @ K[:, h // G].T) @ V[:, h // G]   # G = H // Hkv

    Shape:
        q: [B, H, D] -> out: [B, H, D]
        block_tables: [B, max_blocks] int32; context_lens: [B] int32 (>= 1)
    """
    if meta is None:
        meta = cpu_step_meta(None, block_tables, context_lens.to(q.device), k_cache.shape[1])
    num_seqs, num_positions = q.shape[0], meta.num_positions
    keys, values = (
        cache.index_select(0, meta.block_ids).view(num_seqs, -1, *cache.shape[2:])[:, :num_positions]
        for cache in (k_cache, v_cache)
    )  # whole-block copies: far cheaper than advanced indexing
    out = F.scaled_dot_product_attention(
        q.unsqueeze(2),
        keys.transpose(1, 2).to(q.dtype),  # [B, Hkv, L, D]
        values.transpose(1, 2).to(q.dtype),
        attn_mask=meta.valid,
        scale=scale,
        enable_gqa=True,
    )
    return out.squeeze(2)


def paged_prefill_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Reference causal prefill / chunked prefill over cached prefix plus this chunk's tokens.

    Semantics::

        for b in range(B):
            q_len = cu_seqlens_q[b+1] - cu_seqlens_q[b]
            for i in range(q_len):              # query i sits at position p = seq_lens[b] - q_len + i
                t = cu_seqlens_q[b] + i
                K, V = cached rows of positions 0 .. p of sequence b
                out[t, h] = softmax(scale * q[t, h] @ K[:, h // G].T) @ V[:, h // G]

    Shape:
        q: [Tq, H, D] -> out: [Tq, H, D]
        block_tables: [B, max_blocks] int32; cu_seqlens_q: [B+1] int32; seq_lens: [B] int32
    """
    out = torch.empty_like(q)
    bounds, lens = cu_seqlens_q.tolist(), seq_lens.tolist()
    for b, seq_len in enumerate(lens):
        start, end = bounds[b], bounds[b + 1]
        if end == start:
            continue
        keys = _gather_context(k_cache, block_tables[b], seq_len).transpose(0, 1)  # [Hkv, L, D]
        values = _gather_context(v_cache, block_tables[b], seq_len).transpose(0, 1)
        positions = torch.arange(seq_len - (end - start), seq_len, device=q.device)
        causal = torch.arange(seq_len, device=q.device)[None, :] <= positions[:, None]
        out[start:end] = F.scaled_dot_product_attention(
            q[start:end].transpose(0, 1),
            keys.to(q.dtype),
            values.to(q.dtype),
            attn_mask=causal,
            scale=scale,
            enable_gqa=True,
        ).transpose(0, 1)
    return out


def store_kvcache(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    meta: CpuStepMeta | None = None,
) -> None:
    """Write this step's K/V rows into their cache slots (contract: :func:`store_kvcache_ref`; ``meta``
    is used by the reference path only)."""
    if key.shape != value.shape or key.shape[1:] != k_cache.shape[2:] or k_cache.shape != v_cache.shape:
        raise ValueError(f"key {tuple(key.shape)} / cache {tuple(k_cache.shape)} shapes do not match")
    if use_triton(key):
        from loraplane.kernels import triton_kv_write

        triton_kv_write.store_kvcache(key, value, k_cache, v_cache, slot_mapping)
    else:
        store_kvcache_ref(key, value, k_cache, v_cache, slot_mapping, meta)


def rope_and_store_kvcache(
    qk: torch.Tensor,
    value: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    num_q_heads: int,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    meta: CpuStepMeta | None = None,
) -> None:
    """RoPE on this step's q and k heads (in place), then the rotated k and ``value`` into the cache.

    Semantics::

        fused_ops.rotary_embedding(qk, cos, sin, D)           # q heads then k heads, in place
        k = qk[:, num_q_heads * D:].view(T, Hkv, D)
        store_kvcache(k, value.view(T, Hkv, D), k_cache, v_cache, slot_mapping)

    Shape:
        qk: [T, (Hq + Hkv) * D] (rows may be strided); value: [T, Hkv * D]; cos, sin: [T, 1, D] fp32
        k_cache, v_cache: [num_blocks, block_size, Hkv, D]; slot_mapping: [T] (-1 = no write)
    On the GPU one launch does both (``meta`` is used by the reference path only).
    """
    num_kv_heads, head_dim = k_cache.shape[2], k_cache.shape[3]
    if qk.shape[1] != (num_q_heads + num_kv_heads) * head_dim or value.shape[1] != num_kv_heads * head_dim:
        raise ValueError(
            f"qk {tuple(qk.shape)} / value {tuple(value.shape)} do not match {tuple(k_cache.shape)}"
        )
    if use_triton(qk):
        from loraplane.kernels import triton_kv_write

        triton_kv_write.rope_and_store_kvcache(
            qk, value, cos, sin, num_q_heads, k_cache, v_cache, slot_mapping
        )
        return
    fused_ops.rotary_embedding(qk, cos, sin, head_dim)
    key = qk[:, num_q_heads * head_dim :].view(-1, num_kv_heads, head_dim)
    store_kvcache(key, value.view(-1, num_kv_heads, head_dim), k_cache, v_cache, slot_mapping, meta)


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    meta: CpuStepMeta | None = None,
) -> torch.Tensor:
    """Decode attention (contract: :func:`paged_decode_attention_ref`); split-K on the GPU. ``meta`` is
    used by the reference path only. In batch-invariant mode the GPU splits contexts at fixed
    positions and the CPU attends one sequence at a time over its own context (the batched reference
    pads every context to the longest, and the padded length changes the kernel's blocking)."""
    _check_heads(q, k_cache)
    if use_triton(q):
        from loraplane.kernels import triton_attention_decode

        return triton_attention_decode.paged_decode_attention(
            q, k_cache, v_cache, block_tables, context_lens, scale
        )
    if batch_invariant():
        cu_seqlens_q = torch.arange(q.shape[0] + 1, dtype=torch.int32)
        return paged_prefill_attention_ref(
            q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, scale
        )
    return paged_decode_attention_ref(q, k_cache, v_cache, block_tables, context_lens, scale, meta)


def paged_prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    max_seqlen_q: int | None = None,
) -> torch.Tensor:
    """Causal (chunked) prefill attention (contract: :func:`paged_prefill_attention_ref`).

    ``max_seqlen_q`` (longest query run) sizes the Triton grid; pass it to avoid a device sync.
    """
    _check_heads(q, k_cache)
    if use_triton(q):
        from loraplane.kernels import triton_attention_prefill

        return triton_attention_prefill.paged_prefill_attention(
            q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale, max_seqlen_q
        )
    return paged_prefill_attention_ref(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale)


def _check_heads(q: torch.Tensor, k_cache: torch.Tensor) -> None:
    if q.dim() != 3 or k_cache.dim() != 4 or q.shape[2] != k_cache.shape[3]:
        raise ValueError(f"q {tuple(q.shape)} must be [*, H, D] against cache {tuple(k_cache.shape)}")
    if q.shape[1] % k_cache.shape[2]:
        raise ValueError(f"{q.shape[1]} query heads are not a multiple of {k_cache.shape[2]} KV heads")
