"""The skinny Triton GEMM against its reference (row counts, ragged tiles, bias, configurations)."""

import pytest
import torch

from loraplane.kernels import gemm, triton_gemm

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("rows", [1, 5, 32])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_takes_the_triton_kernel_and_matches(rows, bias):
    gen = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 80, generator=gen).to(DEVICE, torch.float16)
    weight = (torch.randn(72, 80, generator=gen) / 8).to(DEVICE, torch.float16)
    b = torch.randn(72, generator=gen).to(DEVICE, torch.float16) if bias else None
    expected = gemm.linear_ref(x.float(), weight.float(), None if b is None else b.float())
    torch.testing.assert_close(gemm.linear(x, weight, b).float(), expected, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize(
    "config", [triton_gemm.GemmConfig(16, 32, 2, 4), triton_gemm.GemmConfig(32, 64, 3, 4)]
)
def test_skinny_gemm_configurations(config):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(17, 100, generator=gen).to(DEVICE, torch.float16)
    weight = (torch.randn(40, 100, generator=gen) / 8).to(DEVICE, torch.float16)
    out = triton_gemm.skinny_gemm(x, weight, config=config)
    torch.testing.assert_close(out.float(), x.float() @ weight.float().t(), rtol=1e-2, atol=1e-2)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="features"):
        triton_gemm.skinny_gemm(torch.zeros(2, 8), torch.zeros(4, 9))


def test_many_rows_and_fp32_take_the_reference():
    x = torch.randn(gemm.SKINNY_MAX_ROWS + 1, 8)
    weight = torch.randn(4, 8)
    torch.testing.assert_close(gemm.linear(x, weight), x @ weight.t())
