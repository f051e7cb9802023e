"""Triton split-K paged decode attention (flash-decoding).

Decode packs the query heads of one KV head (GQA group) into the rows of one ``tl.dot`` and splits the
context into partitions whose partial softmax states a second kernel merges; the number of partitions
depends only on the batch shape and the block table width, so decode is CUDA-graph safe. Cached rows
are gathered through the block table (:mod:`loraplane.kernels.triton_attention_common`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from loraplane.kernels.dispatch import batch_invariant, dot_precision
from loraplane.kernels.triton_attention_common import LOG2E, cache_offsets, online_softmax_step


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
        offs = cache_offsets(table, pos, valid, block_size, stride_block, stride_tok, HEAD_DIM)
        k = tl.load(k_head + offs, mask=valid[:, None], other=0.0)
        v = tl.load(v_head + offs, mask=valid[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale_log2
        s = tl.where(valid[None, :], s, float("-inf"))
        m_i, l_i, acc = online_softmax_step(s, v, m_i, l_i, acc, PRECISION)
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
    IN_ORDER: tl.constexpr,
):
    pid_b, head = tl.program_id(0), tl.program_id(1)
    ctx = tl.load(context_lens_ptr + pid_b)
    splits = tl.arange(0, SPLITS_P2)
    num_used = tl.minimum(tl.cdiv(ctx, PARTITION), NUM_SPLITS)
    used = splits < num_used
    first = (pid_b * tl.num_programs(1) + head) * NUM_SPLITS
    row = first + splits
    m = tl.load(stats_ptr + row * 2, mask=used, other=float("-inf"))
    m_max = tl.max(m, 0)  # exact in any order
    dims = tl.arange(0, HEAD_DIM)
    if IN_ORDER:
        # one split after another: the sum's order depends on this sequence's splits only, not on
        # the tree shape of a reduction over the batch-wide SPLITS_P2 lanes
        acc = tl.zeros((HEAD_DIM,), tl.float32)
        total = m_max * 0.0
        for split in range(0, num_used):
            w = tl.load(stats_ptr + (first + split) * 2 + 1) * tl.exp2(
                tl.load(stats_ptr + (first + split) * 2) - m_max
            )
            acc += tl.load(part_ptr + (first + split) * HEAD_DIM + dims) * w
            total += w
        out = acc / total
    else:
        l_sum = tl.load(stats_ptr + row * 2 + 1, mask=used, other=0.0)
        weight = tl.where(used, l_sum * tl.exp2(m - m_max), 0.0)
        part = tl.load(part_ptr + row[:, None] * HEAD_DIM + dims[None, :], mask=used[:, None], other=0.0)
        out = tl.sum(part * weight[:, None], 0) / tl.sum(weight, 0)
    tl.store(out_ptr + pid_b * stride_ob + head * stride_oh + dims, out.to(out_ptr.dtype.element_ty))


INVARIANT_PARTITION = 256  # positions per split in batch-invariant mode (a multiple of every block_n)


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
    invariant = batch_invariant()
    if invariant:
        # fixed partitions, always reduced in split order: a sequence's splits depend on its own context
        partition = INVARIANT_PARTITION
        splits = max(2, triton.cdiv(max_context, partition))
    else:
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
            IN_ORDER=invariant,
        )
    return out
