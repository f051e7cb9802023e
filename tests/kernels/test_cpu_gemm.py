"""The AVX-512 panel GEMM equals F.linear (fp32 rounding) for any row count and ragged sizes, and its
fallback for many rows keeps the same results (without the extension: tests/kernels/test_native.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from loraplane.kernels import cpu_gemm, native
from loraplane.kernels.cpu_gemm import (
    MAX_ROWS,
    pack_panels,
    pack_panels_contiguous,
    panel_kernels,
    panel_linear,
)

needs_kernel = pytest.mark.skipif(not native.avx512_supported(), reason="needs AVX-512")


def _reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.linear(x.double(), weight.double(), None if bias is None else bias.double()).float()


def test_pack_panels_layout_and_padding():
    weight = torch.arange(37 * 5, dtype=torch.float32).view(37, 5)
    packed = pack_panels(weight)
    assert packed.panels.shape == (3, 5, 16) and packed.weight is weight and packed.dtype == torch.float32
    for n in (0, 15, 16, 36):
        torch.testing.assert_close(packed.panels[n // 16, :, n % 16], weight[n])
    assert packed.panels[2, :, 5:].abs().sum() == 0  # columns past N are zero


def test_contiguous_packing_lays_panels_end_to_end():
    weights = [torch.randn(33, 8), torch.randn(16, 5), torch.randn(7, 8)]
    packed = pack_panels_contiguous(weights)
    base = packed[0].panels.data_ptr()
    offsets = [p.panels.data_ptr() - base for p in packed]
    assert offsets == [0, 3 * 8 * 16 * 4, (3 * 8 + 5) * 16 * 4]
    for weight, one in zip(weights, packed, strict=True):
        assert one.weight is weight
        torch.testing.assert_close(one.panels, pack_panels(weight).panels, rtol=0, atol=0)


@needs_kernel
@pytest.mark.parametrize(
    ("rows", "in_features", "out_features"),
    [
        (1, 40, 96),
        (3, 7, 5),
        (8, 576, 960),
        (8, 1536, 577),
        (13, 100, 33),
        (16, 64, 16),
        (17, 33, 50),
        (40, 576, 300),
        (8, 576, 49152),
    ],
)
@pytest.mark.parametrize("with_bias", [False, True])
def test_panel_linear_matches_f_linear(rows, in_features, out_features, with_bias):
    gen = torch.Generator().manual_seed(rows * in_features + out_features)
    weight = torch.randn(out_features, in_features, generator=gen)
    bias = torch.randn(out_features, generator=gen) if with_bias else None
    x = torch.randn(rows, in_features, generator=gen)
    out = panel_linear(x, pack_panels(weight), bias)
    assert out.shape == (rows, out_features) and out.dtype == torch.float32
    torch.testing.assert_close(out, _reference(x, weight, bias), rtol=1e-5, atol=2e-5 * in_features**0.5)


@needs_kernel
def test_panel_linear_takes_strided_rows_and_threads():
    gen = torch.Generator().manual_seed(1)
    weight, x = torch.randn(2000, 48, generator=gen), torch.randn(6, 96, generator=gen)[:, ::2]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = panel_linear(x, pack_panels(weight), None)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(out, _reference(x, weight, None), rtol=1e-5, atol=1e-4)


@needs_kernel
def test_kernel_rejects_mismatched_shapes():
    packed = pack_panels(torch.randn(32, 8))
    with pytest.raises(RuntimeError, match="panels must be"):
        panel_kernels().panel_linear(torch.randn(2, 9), packed.panels, None, 32)
    with pytest.raises(RuntimeError, match="bias must be"):
        panel_kernels().panel_linear(torch.randn(2, 8), packed.panels, torch.zeros(31), 32)


def test_many_rows_and_no_rows_use_the_dense_weight(monkeypatch):
    monkeypatch.setattr(cpu_gemm, "panel_kernels", lambda: pytest.fail("the kernel must not run"))
    weight, bias = torch.randn(20, 12), torch.randn(20)
    packed = pack_panels(weight)
    for rows in (0, MAX_ROWS + 1):
        x = torch.randn(rows, 12)
        torch.testing.assert_close(panel_linear(x, packed, bias), F.linear(x, weight, bias))


@needs_kernel
def test_contiguous_packing_buffer_is_huge_page_aligned():
    packed = pack_panels_contiguous([torch.randn(40, 8), torch.randn(16, 8)])
    assert packed[0].panels.data_ptr() % (2 << 20) == 0
