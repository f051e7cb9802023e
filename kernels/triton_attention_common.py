"""Pieces the Triton paged-attention kernels share (`triton_attention_decode`, `triton_attention_prefill`).

Cached rows are gathered per position through the block table (``slot = block * block_size +
offset``, :func:`cache_offsets`), so any block size works and one tile may span several blocks. Scores
are base 2 (``scale * LOG2E`` folded into the scale) and folded tile by tile into an online softmax
state (:func:`online_softmax_step`). The cache write (alone, or fused with RoPE) is
`triton_kv_write`.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def cache_offsets(block_table_row, pos, valid, block_size, stride_block, stride_tok, HEAD_DIM: tl.constexpr):
    """Offsets ``[len(pos), HEAD_DIM]`` of the cached rows at sequence positions ``pos`` (one KV head)."""
    block = tl.load(block_table_row + pos // block_size, mask=valid, other=0).to(tl.int64)
    row = block * stride_block + (pos % block_size) * stride_tok
    return row[:, None] + tl.arange(0, HEAD_DIM)[None, :]


@triton.jit
def online_softmax_step(s, v, m_i, l_i, acc, PRECISION: tl.constexpr):
    """Fold one tile of base-2 scores ``s`` (masked entries -inf) and its values ``v`` into the state."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l_i, acc
