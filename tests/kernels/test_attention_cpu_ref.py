"""The CPU engine's attention reference path: the unmasked KV store and the block gather against their
per-token semantics."""

from __future__ import annotations

import pytest
import torch

from kernels import attention


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
