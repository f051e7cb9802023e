"""LoRAKernelMeta grouping: table-driven checks of the segment tensors."""

import pytest
import torch

from loraplane.kernels.lora_meta import LoRAKernelMeta


@pytest.mark.parametrize(
    ("slots", "counts", "starts", "active"),
    [
        ([2, 0, -1, 2], [1, 0, 2, 0], [1, 2, 2, 4], [0, 2, -1, -1]),
        ([-1, -1], [0, 0, 0, 0], [2, 2, 2, 2], [-1, -1, -1, -1]),
        ([3, 3, 3], [0, 0, 0, 3], [0, 0, 0, 0], [3, -1, -1, -1]),
        ([1, 0, 3, 2], [1, 1, 1, 1], [0, 1, 2, 3], [0, 1, 2, 3]),
    ],
)
def test_prepare_groups_tokens_by_slot(slots, counts, starts, active):
    meta = LoRAKernelMeta(8, 4, "cpu")
    meta.prepare(torch.tensor(slots))
    order = meta.token_indices_sorted[: len(slots)].tolist()
    assert [slots[t] for t in order] == sorted(slots)
    assert meta.num_tokens_per_slot.tolist() == counts
    assert meta.slot_start.tolist() == starts
    assert meta.active_slots.tolist() == active
    assert meta.num_active.item() == sum(a >= 0 for a in active)
    assert meta.active_num_tokens.tolist() == [counts[a] if a >= 0 else 0 for a in active]
    assert meta.active_slot_start.tolist() == [starts[a] if a >= 0 else 0 for a in active]
    assert meta.has_lora == any(s >= 0 for s in slots) and meta.num_tokens == len(slots)


def test_prepare_reuses_the_same_storage_and_copies_ranks():
    meta = LoRAKernelMeta(8, 4, "cpu")
    pointers = [t.data_ptr() for t in (meta.token_indices_sorted, meta.active_slots, meta.slot_rank)]
    meta.prepare(torch.tensor([0, 1]), slot_rank=torch.tensor([8, 16, 4, 64]))
    meta.prepare(torch.tensor([3, 3, 2]))
    assert [t.data_ptr() for t in (meta.token_indices_sorted, meta.active_slots, meta.slot_rank)] == pointers
    assert meta.slot_rank.tolist() == [8, 16, 4, 64]
    assert meta.segments() == [(2, 0, 1), (3, 1, 2)]


@pytest.mark.parametrize(("slots", "message"), [([0] * 9, "max_num_tokens"), ([4], "max_loras")])
def test_prepare_rejects_out_of_range_input(slots, message):
    with pytest.raises(ValueError, match=message):
        LoRAKernelMeta(8, 4, "cpu").prepare(torch.tensor(slots))


def _tiles(meta):
    used = [i for i, s in enumerate(meta.tile_slot.tolist()) if s >= 0]
    rows = meta.tile_tokens.tolist()
    return [
        (meta.tile_slot[i].item(), meta.tile_rank[i].item(), [t for t in rows[i] if t >= 0]) for i in used
    ]


@pytest.mark.parametrize(
    ("slots", "tiles"),
    [
        ([2, 0, -1, 2], [(0, 8, [1]), (2, 4, [0, 3])]),
        ([-1, -1], []),
        ([1] * 20 + [-1, 3], [(1, 16, list(range(16))), (1, 16, [16, 17, 18, 19]), (3, 64, [21])]),
    ],
)
def test_prepare_cuts_each_slot_into_tiles(slots, tiles):
    meta = LoRAKernelMeta(32, 4, "cpu")
    meta.prepare(torch.tensor([3] * 32))  # stale tiles from a previous step must not survive
    meta.prepare(torch.tensor(slots), slot_rank=torch.tensor([8, 16, 4, 64]))
    assert _tiles(meta) == tiles
    assert meta.max_tiles == -(-32 // 16) + 4


def test_prepare_leaves_tiles_alone_above_the_tiled_bound():
    meta = LoRAKernelMeta(2048, 4, "cpu")
    meta.prepare(torch.tensor([0] * 2048))
    assert meta.num_tokens == 2048 and meta.segments() == [(0, 0, 2048)]
    assert meta.token_indices_sorted[:2048].tolist() == list(range(2048))
