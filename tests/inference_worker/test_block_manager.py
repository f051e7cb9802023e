import pytest

from loraplane.inference_worker.block_manager import BlockManager
from loraplane.inference_worker.sampling_params import SamplingParams
from loraplane.inference_worker.sequence import Sequence

BS = 4


def seq(tokens, version=None):
    return Sequence(list(tokens), SamplingParams(), lora_version=version, block_size=BS)


def finish_prefill(bm, s):
    s.num_computed_tokens = len(s)
    bm.cache_blocks(s)


def test_allocate_and_free_returns_blocks():
    bm = BlockManager(8, BS)
    s = seq(range(10))
    assert bm.can_allocate(s)
    bm.allocate(s)
    assert len(s.block_table) == 3 and bm.num_free_blocks == 5
    bm.free(s)
    assert bm.num_free_blocks == 8 and s.block_table == []


def test_prefix_hit_reuses_full_computed_blocks_only():
    bm = BlockManager(16, BS)
    a = seq(range(10))
    bm.allocate(a)
    finish_prefill(bm, a)
    b = seq([*range(8), 99, 98, 97])
    bm.allocate(b)
    assert b.block_table[:2] == a.block_table[:2]
    assert b.num_computed_tokens == b.num_cached_tokens == 8
    assert bm.stats.hits == 8 and bm.stats.queries == 21


def test_whole_prompt_cached_still_recomputes_last_token():
    bm = BlockManager(16, BS)
    a = seq(range(8))
    bm.allocate(a)
    finish_prefill(bm, a)
    b = seq(range(8))
    bm.allocate(b)
    assert b.num_computed_tokens == 4  # the last block holds the token whose logits are needed


def test_extra_key_separates_adapters():
    bm = BlockManager(16, BS)
    a = seq(range(9), version="v1")
    bm.allocate(a)
    finish_prefill(bm, a)
    for version, expected in [("v2", 0), (None, 0), ("v1", 8)]:
        b = seq(range(9), version=version)
        bm.allocate(b)
        assert b.num_cached_tokens == expected, version
        bm.free(b)


def test_freed_blocks_stay_cached_until_evicted():
    bm = BlockManager(4, BS)
    a = seq(range(9))
    bm.allocate(a)
    finish_prefill(bm, a)
    bm.free(a)
    b = seq(range(9))
    bm.allocate(b)
    assert b.num_cached_tokens == 8
    bm.free(b)
    c = seq(range(100, 116))  # needs every block: evicts the cached ones
    bm.allocate(c)
    bm.free(c)
    d = seq(range(9))
    bm.allocate(d)
    assert d.num_cached_tokens == 0


def test_append_slot_adds_a_block_at_the_boundary():
    bm = BlockManager(4, BS)
    s = seq(range(4))
    bm.allocate(s)
    s.num_computed_tokens = 4
    s.append_token(7)
    assert bm.can_append(s)
    bm.append_slot(s)
    assert len(s.block_table) == 2


def test_running_out_is_reported():
    bm = BlockManager(2, BS)
    s = seq(range(12))
    assert not bm.can_allocate(s)
    with pytest.raises(RuntimeError):
        bm.allocate(s)
