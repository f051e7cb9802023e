"""Paged attention kernels against the references, and the references against dense attention."""

import pytest
import torch
import torch.nn.functional as F

from loraplane.kernels import attention

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float16: 2e-2, torch.float32: 1e-4}


def _paged_cache(seq_lens, kv_heads, head_dim, dtype, block_size=8, seed=0):
    """A cache holding random K/V for each sequence in shuffled blocks; returns cache, tables, dense K/V."""
    gen = torch.Generator().manual_seed(seed)
    blocks_per_seq = [-(-n // block_size) for n in seq_lens]
    num_blocks = sum(blocks_per_seq) + 2
    k_cache = torch.zeros(num_blocks, block_size, kv_heads, head_dim, dtype=dtype)
    v_cache = torch.zeros_like(k_cache)
    order = torch.randperm(num_blocks, generator=gen).tolist()
    tables = torch.zeros(len(seq_lens), max(blocks_per_seq) + 1, dtype=torch.int32)
    dense = []
    for b, n in enumerate(seq_lens):
        ids = [order.pop() for _ in range(blocks_per_seq[b])]
        tables[b, : len(ids)] = torch.tensor(ids)
        keys = torch.randn(n, kv_heads, head_dim, generator=gen).to(dtype)
        values = torch.randn(n, kv_heads, head_dim, generator=gen).to(dtype)
        slots = torch.tensor([ids[p // block_size] * block_size + p % block_size for p in range(n)])
        attention.store_kvcache_ref(keys, values, k_cache, v_cache, slots)
        dense.append((keys, values))
    return k_cache.to(DEVICE), v_cache.to(DEVICE), tables.to(DEVICE), dense


def _dense_attention(q, keys, values, positions):
    """Plain causal attention of queries at ``positions`` over dense K/V (GQA by repetition)."""
    group = q.shape[1] // keys.shape[1]
    k, v = (t.float().repeat_interleave(group, dim=1).transpose(0, 1) for t in (keys, values))
    mask = torch.arange(keys.shape[0])[None, :] <= positions[:, None]
    return F.scaled_dot_product_attention(q.float().transpose(0, 1), k, v, attn_mask=mask).transpose(0, 1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_store_kvcache_skips_negative_slots(dtype):
    k_cache = torch.zeros(4, 4, 2, 16, dtype=dtype, device=DEVICE)
    v_cache = torch.zeros_like(k_cache)
    key = torch.randn(5, 2, 16, device=DEVICE).to(dtype)
    value = torch.randn(5, 2, 16, device=DEVICE).to(dtype)
    slots = torch.tensor([3, -1, 9, 0, 15], device=DEVICE)
    k_ref, v_ref = k_cache.clone(), v_cache.clone()
    attention.store_kvcache_ref(key, value, k_ref, v_ref, slots)
    attention.store_kvcache(key, value, k_cache, v_cache, slots)
    assert torch.equal(k_cache, k_ref) and torch.equal(v_cache, v_ref)
    assert torch.equal(k_cache.view(-1, 2, 16)[9], key[2]) and k_cache.view(-1, 2, 16)[1].abs().sum() == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (8, 2)])
def test_decode_matches_reference_and_dense(dtype, heads, kv_heads):
    seq_lens = [1, 37, 100]
    k_cache, v_cache, tables, dense = _paged_cache(seq_lens, kv_heads, 32, dtype)
    q = torch.randn(len(seq_lens), heads, 32).to(DEVICE, dtype)
    context_lens = torch.tensor(seq_lens, dtype=torch.int32, device=DEVICE)
    ref = attention.paged_decode_attention_ref(q, k_cache, v_cache, tables, context_lens, 32**-0.5)
    out = attention.paged_decode_attention(q, k_cache, v_cache, tables, context_lens, 32**-0.5)
    torch.testing.assert_close(out, ref, rtol=TOL[dtype], atol=TOL[dtype])
    for b, (keys, values) in enumerate(dense):
        expected = _dense_attention(q[b : b + 1].cpu(), keys, values, torch.tensor([seq_lens[b] - 1]))
        torch.testing.assert_close(ref[b : b + 1].float().cpu(), expected, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (4, 2)])
def test_prefill_and_chunked_prefill_match_reference(dtype, heads, kv_heads):
    seq_lens, q_lens = [20, 45, 9], [20, 13, 1]  # full prefill, chunk after a cached prefix, one token
    k_cache, v_cache, tables, dense = _paged_cache(seq_lens, kv_heads, 32, dtype, seed=1)
    q = torch.randn(sum(q_lens), heads, 32).to(DEVICE, dtype)
    cu_seqlens_q = torch.tensor([0, 20, 33, 34], dtype=torch.int32, device=DEVICE)
    lens = torch.tensor(seq_lens, dtype=torch.int32, device=DEVICE)
    ref = attention.paged_prefill_attention_ref(q, k_cache, v_cache, tables, cu_seqlens_q, lens, 0.2)
    out = attention.paged_prefill_attention(q, k_cache, v_cache, tables, cu_seqlens_q, lens, 0.2)
    torch.testing.assert_close(out, ref, rtol=TOL[dtype], atol=TOL[dtype])
    start = 0
    for (keys, values), n, q_len in zip(dense, seq_lens, q_lens, strict=True):
        positions = torch.arange(n - q_len, n)
        expected = _dense_attention(q[start : start + q_len].cpu() * (0.2 * 32**0.5), keys, values, positions)
        torch.testing.assert_close(
            ref[start : start + q_len].float().cpu(), expected, rtol=TOL[dtype], atol=TOL[dtype]
        )
        start += q_len


def test_gqa_shape_mismatch_is_rejected():
    k_cache = torch.zeros(2, 4, 3, 16)
    with pytest.raises(ValueError, match="multiple"):
        attention.paged_decode_attention(
            torch.zeros(1, 4, 16), k_cache, k_cache, torch.zeros(1, 2, dtype=torch.int32), torch.ones(1), 1.0
        )


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (4, 2)])
def test_rope_and_store_matches_rotary_then_store(dtype, heads, kv_heads):
    from loraplane.kernels import fused_ops

    head_dim, tokens, block_size = 16, 5, 4
    gen = torch.Generator().manual_seed(heads + kv_heads)
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * head_dim, generator=gen).to(DEVICE, dtype)
    angles = torch.randn(tokens, 1, head_dim, generator=gen)
    cos, sin = angles.cos().to(DEVICE), angles.sin().to(DEVICE)
    slots = torch.tensor([3, -1, 0, 9, 6], device=DEVICE)  # -1: padding, rotated but not stored
    caches = [torch.zeros(3, block_size, kv_heads, head_dim, dtype=dtype, device=DEVICE) for _ in range(4)]
    qk_end = (heads + kv_heads) * head_dim
    want = qkv.clone()
    fused_ops.rotary_embedding_ref(want[:, :qk_end], cos, sin, head_dim, out=want[:, :qk_end])
    key, value = (
        t.reshape(tokens, kv_heads, head_dim) for t in (want[:, heads * head_dim : qk_end], want[:, qk_end:])
    )
    attention.store_kvcache_ref(key, value, caches[0], caches[1], slots)
    attention.rope_and_store_kvcache(
        qkv[:, :qk_end], qkv[:, qk_end:], cos, sin, heads, caches[2], caches[3], slots
    )
    tol = dict(rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(qkv, want, **tol)
    torch.testing.assert_close(caches[2], caches[0], **tol)
    torch.testing.assert_close(caches[3], caches[1], **tol)
