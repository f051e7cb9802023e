"""Triton paged attention: KV-cache write (alone, or fused with RoPE on q and k), split-K decode
(flash-decoding) and causal prefill.

Cached rows are gathered per position through the block table (``slot = block * block_size +
offset``), so any block size works and one tile may span several blocks. Decode packs the query
heads of one KV head (GQA group) into the rows of one ``tl.dot`` and splits the context into
partitions whose partial softmax states a second kernel merges; the number of partitions depends only
on the batch shape and the block table width, so decode is CUDA-graph safe.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from loraplane.kernels.dispatch import dot_precision

LOG2E = 1.4426950408889634


@triton.jit
def _store_kvcache_kernel(
    key_ptr,
    value_ptr,
    k_cache_ptr,
    v_cache_ptr,
    slot_mapping_ptr,
    stride_key,
    stride_value,
    stride_slot,
    ROW: tl.constexpr,
    ROW_P2: tl.constexpr,
):
    pid = tl.program_id(0)
    slot = tl.load(slot_mapping_ptr + pid).to(tl.int64)
    if slot < 0:
        return
    offs = tl.arange(0, ROW_P2)
    mask = offs < ROW
    key = tl.load(key_ptr + pid * stride_key + offs, mask=mask)
    value = tl.load(value_ptr + pid * stride_value + offs, mask=mask)
    tl.store(k_cache_ptr + slot * stride_slot + offs, key, mask=mask)
    tl.store(v_cache_ptr + slot * stride_slot + offs, value, mask=mask)


@triton.jit
def _rope_store_kernel(
    qk_ptr,
    value_ptr,
    cos_ptr,
    sin_ptr,
    k_cache_ptr,
    v_cache_ptr,
    slot_mapping_ptr,
    stride_qk,
    stride_value,
    stride_cos,
    stride_sin,
    stride_slot,
    NUM_Q_HEADS: tl.constexpr,
    NUM_KV_HEADS: tl.constexpr,
    HALF: tl.constexpr,
    HEADS_P2: tl.constexpr,
    HALF_P2: tl.constexpr,
    ROW_P2: tl.constexpr,
):
    """Program t: rotate token t's q and k heads in place; with a slot, write its rotated k and its v
    into the cache (the rotated k is stored straight from registers)."""
    token = tl.program_id(0).to(tl.int64)
    heads = tl.arange(0, HEADS_P2)[:, None]
    dims = tl.arange(0, HALF_P2)[None, :]
    dim_mask = dims < HALF
    mask = (heads < NUM_Q_HEADS + NUM_KV_HEADS) & dim_mask
    first = qk_ptr + token * stride_qk + heads * (2 * HALF) + dims
    x1 = tl.load(first, mask=mask, other=0.0)
    x2 = tl.load(first + HALF, mask=mask, other=0.0)
    cos1 = tl.load(cos_ptr + token * stride_cos + dims, mask=dim_mask, other=0.0)
    cos2 = tl.load(cos_ptr + token * stride_cos + HALF + dims, mask=dim_mask, other=0.0)
    sin1 = tl.load(sin_ptr + token * stride_sin + dims, mask=dim_mask, other=0.0)
    sin2 = tl.load(sin_ptr + token * stride_sin + HALF + dims, mask=dim_mask, other=0.0)
    x1f, x2f = x1.to(tl.float32), x2.to(tl.float32)
    r1 = (x1f * cos1 + x2f * sin1).to(x1.dtype)
    r2 = (x2f * cos2 + x1f * sin2).to(x1.dtype)
    tl.store(first, r1, mask=mask)
    tl.store(first + HALF, r2, mask=mask)
    slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
    if slot >= 0:
        k_mask = mask & (heads >= NUM_Q_HEADS)
        k_dst = k_cache_ptr + slot * stride_slot + (heads - NUM_Q_HEADS) * (2 * HALF) + dims
        tl.store(k_dst, r1.to(k_cache_ptr.dtype.element_ty), mask=k_mask)
        tl.store(k_dst + HALF, r2.to(k_cache_ptr.dtype.element_ty), mask=k_mask)
        offs = tl.arange(0, ROW_P2)
        row_mask = offs < NUM_KV_HEADS * 2 * HALF
        value = tl.load(value_ptr + token * stride_value + offs, mask=row_mask)
        tl.store(
            v_cache_ptr + slot * stride_slot + offs, value.to(v_cache_ptr.dtype.element_ty), mask=row_mask
        )


@triton.jit
def _cache_offsets(block_table_row, pos, valid, block_size, stride_block, stride_tok, HEAD_DIM: tl.constexpr):
    """Offsets ``[len(pos), HEAD_DIM]`` of the cached rows at sequence positions ``pos`` (one KV head)."""
    block = tl.load(block_table_row + pos // block_size, mask=valid, other=0).to(tl.int64)
    row = block * stride_block + (pos % block_size) * stride_tok
    return row[:, None] + tl.arange(0, HEAD_DIM)[None, :]


@triton.jit
def _online_softmax_step(s, v, m_i, l_i, acc, PRECISION: tl.constexpr):
    """Fold one tile of base-2 scores ``s`` (masked entries -inf) and its values ``v`` into the state."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l_i, acc


@triton.jit
def _decode_kernel(
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    block_tables_ptr,
    context_lens_ptr,
    out_ptr,
    part_ptr,
    stats_ptr,
    scale_log2,
    block_size,
    stride_qb,
    stride_qh,
    stride_bt,
    stride_block,
    stride_tok,
    stride_head,
    stride_ob,
    stride_oh,
    GROUP: tl.constexpr,
    GROUP_P2: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PARTITION: tl.constexpr,
    NUM_SPLITS: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_b, kv_head, pid_split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    ctx = tl.load(context_lens_ptr + pid_b)
    start = pid_split * PARTITION
    if start >= ctx:
        return
    end = tl.minimum(start + PARTITION, ctx)
    g = tl.arange(0, GROUP_P2)
    heads = kv_head * GROUP + g
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(
        q_ptr + pid_b * stride_qb + heads[:, None] * stride_qh + dims[None, :],
        mask=(g < GROUP)[:, None],
        other=0.0,
    )
    table = block_tables_ptr + pid_b.to(tl.int64) * stride_bt
    k_head, v_head = k_cache_ptr + kv_head * stride_head, v_cache_ptr + kv_head * stride_head
    m_i = tl.full((GROUP_P2,), float("-inf"), tl.float32)
    l_i = tl.zeros((GROUP_P2,), tl.float32)
    acc = tl.zeros((GROUP_P2, HEAD_DIM), tl.float32)
    for n0 in range(start, end, BLOCK_N):
        pos = n0 + tl.arange(0, BLOCK_N)
        valid = pos < end
        offs = _cache_offsets(table, pos, valid, block_size, stride_block, stride_tok, HEAD_DIM)
        k = tl.load(k_head + offs, mask=valid[:, None], other=0.0)
        v = tl.load(v_head + offs, mask=valid[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale_log2
        s = tl.where(valid[None, :], s, float("-inf"))
        m_i, l_i, acc = _online_softmax_step(s, v, m_i, l_i, acc, PRECISION)
    g_mask = (g < GROUP)[:, None]
    if NUM_SPLITS == 1:
        out = out_ptr + pid_b * stride_ob + heads[:, None] * stride_oh + dims[None, :]
        tl.store(out, (acc / l_i[:, None]).to(out_ptr.dtype.element_ty), mask=g_mask)
    else:
        row = (pid_b * tl.num_programs(1) * GROUP + heads) * NUM_SPLITS + pid_split
        tl.store(part_ptr + row[:, None] * HEAD_DIM + dims[None, :], acc / l_i[:, None], mask=g_mask)
        tl.store(stats_ptr + row * 2, m_i, mask=g < GROUP)
        tl.store(stats_ptr + row * 2 + 1, l_i, mask=g < GROUP)


@triton.jit
def _decode_reduce_kernel(
    part_ptr,
    stats_ptr,
    context_lens_ptr,
    out_ptr,
    stride_ob,
    stride_oh,
    HEAD_DIM: tl.constexpr,
    PARTITION: tl.constexpr,
    NUM_SPLITS: tl.constexpr,
    SPLITS_P2: tl.constexpr,
):
    pid_b, head = tl.program_id(0), tl.program_id(1)
    ctx = tl.load(context_lens_ptr + pid_b)
    splits = tl.arange(0, SPLITS_P2)
    used = splits < tl.minimum(tl.cdiv(ctx, PARTITION), NUM_SPLITS)
    row = (pid_b * tl.num_programs(1) + head) * NUM_SPLITS + splits
    m = tl.load(stats_ptr + row * 2, mask=used, other=float("-inf"))
    l_sum = tl.load(stats_ptr + row * 2 + 1, mask=used, other=0.0)
    weight = l_sum * tl.exp2(m - tl.max(m, 0))
    weight = tl.where(used, weight, 0.0)
    dims = tl.arange(0, HEAD_DIM)
    part = tl.load(part_ptr + row[:, None] * HEAD_DIM + dims[None, :], mask=used[:, None], other=0.0)
    out = tl.sum(part * weight[:, None], 0) / tl.sum(weight, 0)
    tl.store(out_ptr + pid_b * stride_ob + head * stride_oh + dims, out.to(out_ptr.dtype.element_ty))


@triton.jit
def _prefill_kernel(
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    block_tables_ptr,
    cu_seqlens_q_ptr,
    seq_lens_ptr,
    out_ptr,
    scale_log2,
    block_size,
    stride_qt,
    stride_qh,
    stride_bt,
    stride_block,
    stride_tok,
    stride_head,
    stride_ot,
    stride_oh,
    GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_m, pid_b, head = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    q_start = tl.load(cu_seqlens_q_ptr + pid_b)
    q_len = tl.load(cu_seqlens_q_ptr + pid_b + 1) - q_start
    if pid_m * BLOCK_M >= q_len:
        return
    seq_len = tl.load(seq_lens_ptr + pid_b)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < q_len
    pos_q = seq_len - q_len + tl.minimum(rows, q_len - 1)
    dims = tl.arange(0, HEAD_DIM)
    tok = (q_start + rows).to(tl.int64)
    q = tl.load(
        q_ptr + tok[:, None] * stride_qt + head * stride_qh + dims[None, :], mask=row_mask[:, None], other=0.0
    )
    kv_head = head // GROUP
    table = block_tables_ptr + pid_b.to(tl.int64) * stride_bt
    k_head, v_head = k_cache_ptr + kv_head * stride_head, v_cache_ptr + kv_head * stride_head
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), tl.float32)
    kv_end = tl.minimum(tl.max(pos_q, 0) + 1, seq_len)
    for n0 in range(0, kv_end, BLOCK_N):
        pos = n0 + tl.arange(0, BLOCK_N)
        valid = pos < kv_end
        offs = _cache_offsets(table, pos, valid, block_size, stride_block, stride_tok, HEAD_DIM)
        k = tl.load(k_head + offs, mask=valid[:, None], other=0.0)
        v = tl.load(v_head + offs, mask=valid[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale_log2
        s = tl.where(valid[None, :] & (pos[None, :] <= pos_q[:, None]), s, float("-inf"))
        m_i, l_i, acc = _online_softmax_step(s, v, m_i, l_i, acc, PRECISION)
    out = out_ptr + tok[:, None] * stride_ot + head * stride_oh + dims[None, :]
    tl.store(out, (acc / l_i[:, None]).to(out_ptr.dtype.element_ty), mask=row_mask[:, None])


def store_kvcache(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Launch the cache write (contract: :func:`loraplane.kernels.attention.store_kvcache_ref`)."""
    row = key.shape[1] * key.shape[2]
    key, value = (t if t[0].is_contiguous() else t.contiguous() for t in (key, value))
    if key.dtype != k_cache.dtype:
        key, value = key.to(k_cache.dtype), value.to(k_cache.dtype)
    _store_kvcache_kernel[(key.shape[0],)](
        key,
        value,
        k_cache,
        v_cache,
        slot_mapping,
        key.stride(0),
        value.stride(0),
        k_cache.stride(1),
        ROW=row,
        ROW_P2=triton.next_power_of_2(row),
    )


def rope_and_store_kvcache(
    qk: torch.Tensor,
    value: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    num_q_heads: int,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Launch RoPE + cache write (contract: :func:`loraplane.kernels.attention.rope_and_store_kvcache`)."""
    num_kv_heads, head_dim = k_cache.shape[2], k_cache.shape[3]
    cos2d, sin2d = cos.reshape(-1, head_dim), sin.reshape(-1, head_dim)
    assert qk.stride(-1) == 1 and value.stride(-1) == 1 and cos2d.stride(-1) == 1 and sin2d.stride(-1) == 1
    assert k_cache.stride(2) == head_dim and k_cache.stride() == v_cache.stride()
    if qk.shape[0] == 0:
        return
    _rope_store_kernel[(qk.shape[0],)](
        qk,
        value,
        cos2d,
        sin2d,
        k_cache,
        v_cache,
        slot_mapping,
        qk.stride(0),
        value.stride(0),
        cos2d.stride(0),
        sin2d.stride(0),
        k_cache.stride(1),
        NUM_Q_HEADS=num_q_heads,
        NUM_KV_HEADS=num_kv_heads,
        HALF=head_dim // 2,
        HEADS_P2=triton.next_power_of_2(num_q_heads + num_kv_heads),
        HALF_P2=triton.next_power_of_2(head_dim // 2),
        ROW_P2=triton.next_power_of_2(num_kv_heads * head_dim),
        num_warps=4,
    )


def _num_splits(batch: int, kv_heads: int, max_context: int, block_n: int, device: torch.device) -> int:
    """Partitions per sequence so that about 4 programs run per multiprocessor."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
    wanted = triton.cdiv(4 * sms, batch * kv_heads)
    return max(1, min(triton.next_power_of_2(wanted), triton.cdiv(max_context, block_n), 64))


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    block_n: int | None = None,
    *,
    num_warps: int | None = None,
    num_stages: int = 2,
    splits: int | None = None,
) -> torch.Tensor:
    """Launch split-K decode attention (contract: :func:`kernels.attention.paged_decode_attention_ref`);
    the keyword arguments override the launch configuration (benchmarks sweep them).

    Default tiles (H200, benchmarks/results/attention_engine_sweep_h200.json): without grouped heads
    (MHA) a program's MMA rows are mostly padding and smaller, lighter programs win (32 positions,
    2 warps: 3-5% faster at contexts 192 and 640); grouped heads keep 64 positions and 4 warps."""
    batch, heads, head_dim = q.shape
    kv_heads, block_size = k_cache.shape[2], k_cache.shape[1]
    group = heads // kv_heads
    block_n = block_n or (32 if group == 1 else 64)
    num_warps = num_warps or (2 if group == 1 else 4)
    max_context = block_tables.shape[1] * block_size
    splits = splits or _num_splits(batch, kv_heads, max_context, block_n, q.device)
    partition = triton.cdiv(triton.cdiv(max_context, splits), block_n) * block_n
    out = torch.empty_like(q)
    part = torch.empty(batch * heads * splits, head_dim, dtype=torch.float32, device=q.device)
    stats = torch.empty(batch * heads * splits, 2, dtype=torch.float32, device=q.device)
    _decode_kernel[(batch, kv_heads, splits)](
        q,
        k_cache,
        v_cache,
        block_tables,
        context_lens,
        out,
        part,
        stats,
        scale * LOG2E,
        block_size,
        q.stride(0),
        q.stride(1),
        block_tables.stride(0),
        *k_cache.stride()[:3],
        out.stride(0),
        out.stride(1),
        GROUP=group,
        GROUP_P2=max(16, triton.next_power_of_2(group)),
        HEAD_DIM=head_dim,
        BLOCK_N=block_n,
        PARTITION=partition,
        NUM_SPLITS=splits,
        PRECISION=dot_precision(q.dtype),
        num_warps=num_warps,
        num_stages=num_stages,
    )
    if splits > 1:
        _decode_reduce_kernel[(batch, heads)](
            part,
            stats,
            context_lens,
            out,
            out.stride(0),
            out.stride(1),
            HEAD_DIM=head_dim,
            PARTITION=partition,
            NUM_SPLITS=splits,
            SPLITS_P2=triton.next_power_of_2(splits),
        )
    return out


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
    """Launch causal prefill attention (contract: :func:`kernels.attention.paged_prefill_attention_ref`)."""
    heads, head_dim = q.shape[1], q.shape[2]
    if max_seqlen_q is None:
        max_seqlen_q = int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max())
    block_m = 64 if max_seqlen_q > 16 else 16
    out = torch.empty_like(q)
    grid = (triton.cdiv(max_seqlen_q, block_m), seq_lens.shape[0], heads)
    _prefill_kernel[grid](
        q,
        k_cache,
        v_cache,
        block_tables,
        cu_seqlens_q,
        seq_lens,
        out,
        scale * LOG2E,
        k_cache.shape[1],
        q.stride(0),
        q.stride(1),
        block_tables.stride(0),
        *k_cache.stride()[:3],
        out.stride(0),
        out.stride(1),
        GROUP=heads // k_cache.shape[2],
        HEAD_DIM=head_dim,
        BLOCK_M=block_m,
        BLOCK_N=64,
        PRECISION=dot_precision(q.dtype),
        num_warps=4,
        num_stages=2,
    )
    return out
