"""The CPU engine's attention reference path: the unmasked KV store and the block gather against their
per-token semantics."""

from __future__ import annotations

import pytest
import torch

from loraplane.kernels import attention


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_store_without_padding_writes_every_slot(dtype):
    gen = torch.Generator().manual_seed(0)
    k_cache, v_cache = torch.zeros(6, 4, 2, 8, dtype=dtype), torch.zeros(6, 4, 2, 8, dtype=dtype)
    qkv = torch.randn(5, 3, 2, 8, generator=gen).to(dtype)
    key, value = qkv[:, 1], qkv[:, 2]  # row-strided views, as the engine passes them
    slots = torch.tensor([3, 22, 9, 0, 15])
    attention.store_kvcache_ref(key, value, k_cache, v_cache, slots)
    for t, slot in enumerate(slots.tolist()):
        block, offset = divmod(slot, 4)
        assert torch.equal(k_cache[block, offset], key[t]) and torch.equal(v_cache[block, offset], value[t])
    assert int((k_cache.flatten(0, 1).abs().sum(dim=(1, 2)) > 0).sum()) == len(slots)


@pytest.mark.parametrize("table_shape", [(7,), (3, 7)])
def test_gather_context_follows_block_tables(table_shape):
    cache = torch.randn(20, 4, 2, 8, generator=torch.Generator().manual_seed(1))
    tables = torch.randint(0, 20, table_shape, generator=torch.Generator().manual_seed(2), dtype=torch.int32)
    rows = attention._gather_context(cache, tables, 10)
    assert rows.shape == (*table_shape[:-1], 10, 2, 8)
    flat_tables = tables.view(-1, 7)
    for b, row in enumerate(rows.view(-1, 10, 2, 8)):
        for p in range(10):
            assert torch.equal(row[p], cache[flat_tables[b, p // 4], p % 4])


@pytest.mark.parametrize("padded", [False, True])
def test_step_meta_gives_the_same_store_and_decode_as_without_it(padded):
    """The per-step values every layer shares (built once) change nothing in the cache or the output."""
    gen = torch.Generator().manual_seed(3)
    block_size, num_seqs = 4, 3
    k_cache, v_cache = torch.randn(12, block_size, 2, 8, generator=gen), torch.randn(12, block_size, 2, 8)
    tables = torch.randperm(12, generator=gen)[:9].view(num_seqs, 3).to(torch.int32)
    lens = torch.tensor([9, 3, 12], dtype=torch.int32)
    slots = torch.tensor([-1 if padded else 5, 40, 47])
    key, value = torch.randn(3, 2, 8, generator=gen), torch.randn(3, 2, 8, generator=gen)
    meta = attention.cpu_step_meta(slots, tables, lens, block_size)
    assert (meta.slots is None) == padded and meta.num_positions == 12
    caches = [(k_cache.clone(), v_cache.clone()) for _ in range(2)]
    attention.store_kvcache_ref(key, value, *caches[0], slots)
    attention.store_kvcache_ref(key, value, *caches[1], slots, meta)
    assert all(torch.equal(a, b) for a, b in zip(caches[0], caches[1], strict=True))
    q = torch.randn(num_seqs, 4, 8, generator=gen)
    want = attention.paged_decode_attention_ref(q, *caches[0], tables, lens, 0.3)
    got = attention.paged_decode_attention_ref(q, *caches[1], tables, lens, 0.3, meta)
    assert torch.equal(got, want)
    for b, n in enumerate(lens.tolist()):  # against the per-sequence semantics
        rows = torch.tensor([int(tables[b, p // block_size]) * block_size + p % block_size for p in range(n)])
        keys = caches[0][0].flatten(0, 1)[rows].repeat_interleave(2, dim=1).transpose(0, 1)
        values = caches[0][1].flatten(0, 1)[rows].repeat_interleave(2, dim=1).transpose(0, 1)
        probs = torch.softmax(0.3 * (q[b].unsqueeze(1) @ keys.transpose(1, 2)), dim=-1)
        torch.testing.assert_close(got[b], (probs @ values).squeeze(1), atol=1e-5, rtol=1e-5)
