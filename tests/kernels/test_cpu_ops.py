"""The native fp32 CPU ops against the `kernels.fused_ops` references (the spec), the dispatch that picks
them, and the huge-page buffer."""

from __future__ import annotations

import pytest
import torch

from loraplane.kernels import cpu_ops, fused_ops

needs_native = pytest.mark.skipif(cpu_ops.native_ops() is None, reason="needs the AVX-512 extension")


@pytest.fixture(autouse=True)
def _triton_on_cpu():
    """Overrides the package fixture: these are the engine's CPU ops, run as the engine runs them (no
    Triton interpreter)."""
    yield


REL = 1e-6  # rounding of one fp32 sum order or one exp against another


def _randn(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _assert_within_rounding(got, want):
    assert got.shape == want.shape and got.dtype == want.dtype
    assert ((got - want).abs() <= REL * want.abs().max()).all()


@needs_native
@pytest.mark.parametrize("hidden", [576, 70])
@pytest.mark.parametrize("with_residual", [True, False])
def test_add_rms_norm_matches_reference(hidden, with_residual):
    x = _randn(9, hidden, scale=3.0)[:, : hidden - 6]  # strided rows, a ragged tail
    residual = _randn(9, hidden - 6, seed=1) if with_residual else None
    weight = _randn(hidden - 6, seed=2)
    x_before = x.clone()
    want_out, want_res = fused_ops.add_rms_norm_ref(x, residual, weight, 1e-5)
    out, res = cpu_ops.native_ops().add_rms_norm(x, residual, weight, 1e-5)
    assert torch.equal(res, want_res) and torch.equal(x, x_before)  # the add rounds as the reference's
    _assert_within_rounding(out, want_out)


@needs_native
def test_silu_and_mul_matches_reference_over_the_exp_range():
    gate_up = _randn(8, 2 * 1000, scale=6.0)
    gate_up[0, :6] = torch.tensor([-120.0, -88.0, -0.0, 0.0, 30.0, 100.0])
    got, want = cpu_ops.native_ops().silu_and_mul(gate_up), fused_ops.silu_and_mul_ref(gate_up)
    assert got.shape == want.shape
    tol = 2e-7 * want.abs() + 1e-30  # ~2 ulp per element (exp and divide of another library)
    assert ((got - want).abs() <= tol).all()


@needs_native
def test_rotary_is_bit_identical_and_in_place():
    qkv = _randn(8, 576 + 2 * 192)
    cos, sin = _randn(8, 1, 64, seed=1), _randn(8, 1, 64, seed=2)
    want = fused_ops.rotary_embedding_ref(qkv[:, :768].clone(), cos, sin, 64)
    v_before = qkv[:, 768:].clone()
    cpu_ops.native_ops().rotary_embedding(qkv[:, :768], cos, sin, 64)
    assert torch.equal(qkv[:, :768], want) and torch.equal(qkv[:, 768:], v_before)


@needs_native
def test_fused_ops_dispatch_takes_native_rope_for_fp32_cpu_rows():
    qk, (cos, sin) = _randn(4, 96, seed=4), (_randn(4, 1, 32, seed=5), _randn(4, 1, 32, seed=6))
    want = fused_ops.rotary_embedding_ref(qk, cos, sin, 32)
    assert fused_ops.rotary_embedding(qk, cos, sin, 32) is qk and torch.equal(qk, want)


def test_fused_ops_keep_references_for_other_dtypes_and_head_dims():
    x = _randn(4, 48).to(torch.bfloat16)
    weight = _randn(48, seed=1).to(torch.bfloat16)
    want = fused_ops.rms_norm_ref(x, weight, 1e-6)
    assert torch.equal(fused_ops.add_rms_norm(x, None, weight, 1e-6)[0], want)
    qk, (cos, sin) = _randn(3, 48, seed=2), (_randn(3, 1, 24, seed=3), _randn(3, 1, 24, seed=4))
    want = fused_ops.rotary_embedding_ref(qk, cos, sin, 24)
    assert torch.equal(fused_ops.rotary_embedding(qk, cos, sin, 24), want)  # head_dim 24: the reference


@needs_native
def test_huge_empty_is_aligned_writable_and_freed():
    buf = cpu_ops.huge_empty(3 * 2**20 + 5)
    assert buf.shape == (3 * 2**20 + 5,) and buf.dtype == torch.float32
    assert buf.data_ptr() % (2 << 20) == 0
    buf.fill_(2.0)
    assert buf.sum().item() == 2.0 * buf.numel()
    del buf  # munmap through the deleter; a bad unmap would crash here


def test_huge_empty_without_extension_is_plain(monkeypatch):
    monkeypatch.setattr(cpu_ops, "native_ops", lambda: None)
    buf = cpu_ops.huge_empty(10)
    assert buf.shape == (10,) and buf.dtype == torch.float32
