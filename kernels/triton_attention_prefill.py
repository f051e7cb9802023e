"""Triton causal paged prefill attention.

Program ``(m tile, sequence, head)``: one tile of a sequence's new query rows against its cached keys
and values up to each row's own position (the new tokens' rows are already in the cache), gathered
through the block table (:mod:`loraplane.kernels.triton_attention_common`), with an online softmax.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from loraplane.kernels.dispatch import batch_invariant, dot_precision
from loraplane.kernels.triton_attention_common import LOG2E, cache_offsets, online_softmax_step


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
        offs = cache_offsets(table, pos, valid, block_size, stride_block, stride_tok, HEAD_DIM)
        k = tl.load(k_head + offs, mask=valid[:, None], other=0.0)
        v = tl.load(v_head + offs, mask=valid[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale_log2
        s = tl.where(valid[None, :] & (pos[None, :] <= pos_q[:, None]), s, float("-inf"))
        m_i, l_i, acc = online_softmax_step(s, v, m_i, l_i, acc, PRECISION)
    out = out_ptr + tok[:, None] * stride_ot + head * stride_oh + dims[None, :]
    tl.store(out, (acc / l_i[:, None]).to(out_ptr.dtype.element_ty), mask=row_mask[:, None])


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
    block_m = 64 if max_seqlen_q > 16 or batch_invariant() else 16  # invariant: one tile shape always
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
