"""Triton shrink/expand against the PyTorch references (interpreter on CPU, real kernels on CUDA)."""

import pytest
import torch

from loraplane.kernels import (
    lora_ops,
    triton_lora_decode,
    triton_lora_expand,
    triton_lora_fused,
    triton_lora_shrink,
)
from loraplane.kernels.lora_meta import LoRAKernelMeta
from loraplane.kernels.testing import POPULARITIES, make_lora_weights, make_slot_ranks, make_token_slots

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NUM_LORAS, MAX_RANK, IN_FEATURES = 24, 16, 64
SLICE_WIDTHS = {1: (48,), 2: (40, 40), 3: (64, 16, 16)}  # 3 = q/k/v under GQA
TOL = {torch.float16: 2e-2, torch.float32: 1e-4}


def _case(popularity, num_slices, dtype, num_tokens=20, ranks=(4, 8, 16), seed=0):
    slots = make_token_slots(popularity, num_tokens, NUM_LORAS, seed=seed)
    slot_rank = make_slot_ranks(NUM_LORAS, ranks, seed=seed)
    meta = LoRAKernelMeta(max(64, num_tokens), NUM_LORAS, DEVICE)
    meta.prepare(slots, slot_rank)
    lora_a, lora_b = make_lora_weights(
        NUM_LORAS, MAX_RANK, IN_FEATURES, SLICE_WIDTHS[num_slices], dtype, DEVICE
    )
    x = torch.randn(num_tokens, IN_FEATURES, generator=torch.Generator().manual_seed(seed)).to(DEVICE, dtype)
    return slots, slot_rank, meta, x, lora_a, lora_b


def _rank_mask(slots, slot_rank):
    """[T, MAX_RANK] True where y is specified: tokens with an adapter, columns below their rank."""
    ranks = torch.where(slots >= 0, slot_rank[slots.clamp(min=0).long()], 0)
    return (torch.arange(MAX_RANK)[None, :] < ranks[:, None]).to(DEVICE)


@pytest.mark.parametrize("popularity", POPULARITIES)
@pytest.mark.parametrize(
    ("num_slices", "dtype"),
    [(1, torch.float16), (2, torch.float32), (3, torch.float16), (3, torch.float32)],
)
def test_shrink_expand_match_reference(popularity, num_slices, dtype):
    slots, slot_rank, meta, x, lora_a, lora_b = _case(popularity, num_slices, dtype)
    y_ref = torch.zeros(num_slices, x.shape[0], MAX_RANK, device=DEVICE)
    lora_ops.lora_shrink_ref(x, lora_a, y_ref, meta, scale=0.5)
    y = torch.full_like(y_ref, 7.0)
    lora_ops.lora_shrink(x, lora_a, y, meta, scale=0.5)
    specified = _rank_mask(slots, slot_rank).expand_as(y)
    torch.testing.assert_close(y[specified], y_ref[specified], rtol=TOL[dtype], atol=TOL[dtype])

    base = torch.randn(x.shape[0], sum(SLICE_WIDTHS[num_slices])).to(DEVICE, dtype)
    out_ref, out = base.clone(), base.clone()
    lora_ops.lora_expand_ref(y_ref, lora_b, out_ref, meta)
    lora_ops.lora_expand(y_ref, lora_b, out, meta)
    torch.testing.assert_close(out, out_ref, rtol=TOL[dtype], atol=TOL[dtype])
    base_only = (slots < 0).to(DEVICE)
    assert torch.equal(out[base_only], base[base_only])


@pytest.mark.parametrize(
    "config",
    [
        triton_lora_shrink.ShrinkConfig(block_m=16, block_n=16, block_k=32, split_k=1),
        triton_lora_shrink.ShrinkConfig(block_m=32, block_n=16, block_k=16, split_k=2),
    ],
)
def test_shrink_tilings_cover_rank_tiles_and_store_path(config):
    slots, slot_rank, meta, x, lora_a, _ = _case("zipf", 2, torch.float32, num_tokens=40, ranks=(8, 16))
    y_ref = torch.zeros(2, 40, MAX_RANK, device=DEVICE)
    lora_ops.lora_shrink_ref(x, lora_a, y_ref, meta)
    y = torch.zeros_like(y_ref)
    triton_lora_shrink.shrink(x, lora_a, y, meta, config=config)
    specified = _rank_mask(slots, slot_rank).expand_as(y)
    torch.testing.assert_close(y[specified], y_ref[specified], rtol=1e-4, atol=1e-4)


def test_expand_without_add_inputs_overwrites_only_adapter_rows():
    slots, _, meta, x, lora_a, lora_b = _case("base_mixed", 2, torch.float32)
    y = torch.zeros(2, x.shape[0], MAX_RANK, device=DEVICE)
    lora_ops.lora_shrink_ref(x, lora_a, y, meta)
    base = torch.randn(x.shape[0], 80, device=DEVICE)
    out_ref, out = base.clone(), base.clone()
    lora_ops.lora_expand_ref(y, lora_b, out_ref, meta, add_inputs=False)
    triton_lora_expand.expand(
        y,
        lora_b,
        out,
        meta,
        [0, 40],
        add_inputs=False,
        config=triton_lora_expand.ExpandConfig(block_m=16, block_n=32),
    )
    torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-4)


def test_add_lora_matches_dense_per_token_math():
    slots, slot_rank, meta, x, lora_a, lora_b = _case("uniform", 3, torch.float32, ranks=(16,))
    out = torch.zeros(x.shape[0], 96, device=DEVICE)
    lora_ops.add_lora(out, x, lora_a, lora_b, meta)
    expected = torch.cat(
        [
            torch.einsum("ti,tri,tor->to", x, a[slots.long()], b[slots.long()])
            for a, b in zip(lora_a, lora_b, strict=True)
        ],
        dim=1,
    )
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_no_adapter_leaves_buffers_untouched():
    _, _, meta, x, lora_a, lora_b = _case("uniform", 1, torch.float32)
    meta.prepare(torch.full((x.shape[0],), -1, dtype=torch.int32))
    assert not meta.has_lora
    y = torch.full((1, x.shape[0], MAX_RANK), 3.0, device=DEVICE)
    out = torch.ones(x.shape[0], 48, device=DEVICE)
    lora_ops.lora_shrink(x, lora_a, y, meta)
    lora_ops.lora_expand(y, lora_b, out, meta)
    assert torch.all(y == 3.0) and torch.all(out == 1.0)


def test_shape_errors_are_actionable():
    _, _, meta, x, lora_a, _ = _case("uniform", 1, torch.float32)
    with pytest.raises(ValueError, match="fp32"):
        lora_ops.lora_shrink(x, lora_a, torch.zeros(1, x.shape[0], MAX_RANK, dtype=torch.float16), meta)


@pytest.mark.parametrize("num_tokens", [20, 100])
def test_reference_paths_match_dense_math(num_tokens):
    slots, slot_rank, meta, x, lora_a, lora_b = _case("base_mixed", 2, torch.float32, num_tokens=num_tokens)
    y = torch.zeros(2, num_tokens, MAX_RANK, device=DEVICE)
    out = torch.zeros(num_tokens, 80, device=DEVICE)
    lora_ops.lora_shrink_ref(x, lora_a, y, meta)
    lora_ops.lora_expand_ref(y, lora_b, out, meta)
    keep = _rank_mask(slots, slot_rank).float()
    index = slots.clamp(min=0).long()
    expected = torch.cat(
        [
            torch.einsum("ti,tri,tr,tor->to", x, a[index], keep, b[index])
            for a, b in zip(lora_a, lora_b, strict=True)
        ],
        dim=1,
    )
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def _dense_delta(x, lora_a, lora_b, slots, slot_rank):
    """Per-token ``x @ A[:r]^T @ B[:, :r]^T`` per slice, zero for base-only tokens (fp32)."""
    keep = _rank_mask(slots, slot_rank).float() * (slots >= 0).to(DEVICE)[:, None].float()
    index = slots.clamp(min=0).long()
    return torch.cat(
        [
            torch.einsum("ti,tri,tr,tor->to", x.float(), a[index].float(), keep, b[index].float())
            for a, b in zip(lora_a, lora_b, strict=True)
        ],
        dim=1,
    )


@pytest.mark.parametrize("popularity", POPULARITIES)
@pytest.mark.parametrize(
    ("num_slices", "dtype"), [(1, torch.float16), (3, torch.float32), (2, torch.float16)]
)
def test_add_lora_decode_path_matches_dense(popularity, num_slices, dtype):
    slots, slot_rank, meta, x, lora_a, lora_b = _case(popularity, num_slices, dtype)
    base = torch.randn(x.shape[0], sum(SLICE_WIDTHS[num_slices])).to(DEVICE, dtype)
    out = base.clone()
    lora_ops.add_lora(out, x, lora_a, lora_b, meta)  # 20 tokens: the tiled decode kernels
    expected = base.float() + _dense_delta(x, lora_a, lora_b, slots, slot_rank)
    torch.testing.assert_close(out.float(), expected, rtol=TOL[dtype], atol=TOL[dtype])
    base_only = (slots < 0).to(DEVICE)
    assert torch.equal(out[base_only], base[base_only])


@pytest.mark.parametrize(
    "config",
    [
        triton_lora_fused.FusedConfig(split_n=3, block_k=16, block_n=16, num_warps=4),
        triton_lora_fused.FusedConfig(split_n=1, block_k=32, block_n=32, num_warps=4),
        # Producer/consumer: K shares of one tile, of a 2-step loop, and empty ones; empty column shares.
        triton_lora_fused.FusedConfig(split_n=2, block_k=16, block_n=16, num_warps=4, split_k=4),
        triton_lora_fused.FusedConfig(split_n=1, block_k=16, block_n=32, num_warps=4, split_k=2),
        triton_lora_fused.FusedConfig(split_n=8, block_k=32, block_n=16, num_warps=4, split_k=8),
    ],
)
def test_fused_tilings_cover_column_shares_and_k_loop(config):
    slots, slot_rank, meta, x, lora_a, lora_b = _case("base_mixed", 3, torch.float32, num_tokens=12)
    out = torch.zeros(x.shape[0], 96, device=DEVICE)
    triton_lora_fused.fused_add_lora(out, x, lora_a, lora_b, meta, [0, 64, 80], config=config)
    expected = _dense_delta(x, lora_a, lora_b, slots, slot_rank)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    assert not meta.coop_counters.any()  # reset by the kernel for the next launch


@pytest.mark.parametrize("num_tokens", [20, 100])
def test_add_lora_reference_matches_dense(num_tokens):
    slots, slot_rank, meta, x, lora_a, lora_b = _case("base_mixed", 3, torch.float32, num_tokens=num_tokens)
    out = torch.ones(num_tokens, 96, device=DEVICE)
    lora_ops.add_lora_ref(out, x, lora_a, lora_b, meta)
    expected = 1.0 + _dense_delta(x, lora_a, lora_b, slots, slot_rank)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("max_rank", [8, 24])  # rank masks rounded to 16 must stay inside the rows
def test_ranks_not_multiple_of_16(max_rank):
    slots = make_token_slots("zipf", 12, 6)
    slot_rank = make_slot_ranks(6, (max_rank // 2, max_rank))
    meta = LoRAKernelMeta(64, 6, DEVICE)
    meta.prepare(slots, slot_rank)
    lora_a, lora_b = make_lora_weights(6, max_rank, IN_FEATURES, (32, 16), torch.float32, DEVICE)
    x = torch.randn(12, IN_FEATURES).to(DEVICE)
    keep = (torch.arange(max_rank)[None, :] < slot_rank[slots.long()][:, None]).float().to(DEVICE)
    expected = torch.cat(
        [
            torch.einsum("ti,tri,tr,tor->to", x, a[slots.long()], keep, b[slots.long()])
            for a, b in zip(lora_a, lora_b, strict=True)
        ],
        dim=1,
    )
    fused, split = torch.zeros(12, 48, device=DEVICE), torch.zeros(12, 48, device=DEVICE)
    lora_ops.add_lora(fused, x, lora_a, lora_b, meta)
    y = torch.zeros(2, 12, max_rank, device=DEVICE)
    lora_ops.lora_shrink(x, lora_a, y, meta)
    lora_ops.lora_expand(y, lora_b, split, meta)
    torch.testing.assert_close(fused, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(split, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("popularity", ["distinct", "identical", "base_mixed"])
@pytest.mark.parametrize(
    "config",
    [
        triton_lora_decode.DecodeConfig(split_k=4, block_k=16, block_n=16),
        triton_lora_decode.DecodeConfig(split_k=1, block_k=16, block_n=64),  # k loop of 4 steps
        triton_lora_decode.DecodeConfig(split_k=8, block_k=32, block_n=32),  # empty k shares
    ],
)
def test_decode_tilings_cover_splits_and_column_blocks(popularity, config):
    slots, slot_rank, meta, x, lora_a, lora_b = _case(popularity, 3, torch.float16, num_tokens=24)
    base = torch.randn(x.shape[0], 96).to(DEVICE, torch.float16)
    out = base.clone()
    triton_lora_decode.decode_add_lora(out, x, lora_a, lora_b, meta, [0, 64, 80], config=config)
    expected = base.float() + _dense_delta(x, lora_a, lora_b, slots, slot_rank)
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)
    base_only = (slots < 0).to(DEVICE)
    assert torch.equal(out[base_only], base[base_only])


def test_decode_path_over_four_slices_and_a_tile_of_many_tokens():
    """Slices past 3 take a second launch pair; 40 tokens of one slot span three tiles."""
    slots = torch.tensor([5] * 40 + [-1, 2], dtype=torch.int32)
    slot_rank = make_slot_ranks(NUM_LORAS, (8, 16))
    meta = LoRAKernelMeta(64, NUM_LORAS, DEVICE)
    meta.prepare(slots, slot_rank)
    lora_a, lora_b = make_lora_weights(
        NUM_LORAS, MAX_RANK, IN_FEATURES, (32, 16, 16, 48), torch.float32, DEVICE
    )
    x = torch.randn(42, IN_FEATURES).to(DEVICE)
    out = torch.zeros(42, 112, device=DEVICE)
    lora_ops.add_lora(out, x, lora_a, lora_b, meta)
    torch.testing.assert_close(out, _dense_delta(x, lora_a, lora_b, slots, slot_rank), rtol=1e-4, atol=1e-4)


def test_decode_config_rejects_non_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        triton_lora_decode.DecodeConfig(split_k=3, block_k=16, block_n=16)
