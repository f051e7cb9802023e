"""Fused decoder-layer ops (add + RMSNorm, SiLU-and-mul, RoPE): Triton kernels against the references."""

import pytest
import torch

from loraplane.kernels import fused_ops

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16]
TOL = {torch.float16: 2e-3, torch.float32: 1e-5, torch.bfloat16: 1.6e-2}


def _randn(*shape, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen).to(dtype).to(DEVICE)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [64, 96])
@pytest.mark.parametrize("with_residual", [True, False])
def test_add_rms_norm_matches_reference(dtype, hidden, with_residual):
    x = _randn(5, hidden, dtype=dtype)
    residual = _randn(5, hidden, dtype=dtype, seed=1) if with_residual else None
    weight = _randn(hidden, dtype=dtype, seed=2)
    want_out, want_res = fused_ops.add_rms_norm_ref(x, residual, weight, 1e-6)
    x_in = x.clone()
    res_in = residual.clone() if with_residual else None
    out, res = fused_ops.add_rms_norm(x_in, res_in, weight, 1e-6)
    torch.testing.assert_close(res, want_res, atol=TOL[dtype], rtol=TOL[dtype])
    torch.testing.assert_close(out, want_out, atol=TOL[dtype], rtol=TOL[dtype])
    if with_residual:  # in place: no allocation inside a CUDA graph
        assert out.data_ptr() == x_in.data_ptr() and res.data_ptr() == res_in.data_ptr()
    else:
        assert res is x_in and torch.equal(x_in, x)


def test_add_rms_norm_rows_are_independent_of_padding():
    """A strided [T, hidden] view normalizes each row over exactly ``hidden`` elements."""
    base = _randn(4, 80, dtype=torch.float32)
    x = base[:, :48]
    weight = torch.ones(48, device=DEVICE)
    out, _ = fused_ops.add_rms_norm(x, None, weight, 1e-6)
    torch.testing.assert_close(out, fused_ops.rms_norm_ref(x, weight, 1e-6), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [32, 1500])
def test_silu_and_mul_matches_reference(dtype, width):
    x = _randn(3, 2 * width, dtype=dtype) * 4
    got = fused_ops.silu_and_mul(x)
    assert got.shape == (3, width)
    torch.testing.assert_close(got, fused_ops.silu_and_mul_ref(x), atol=TOL[dtype], rtol=TOL[dtype])


def _rope_rows(num_tokens, head_dim, seed=3):
    angles = _randn(num_tokens, 1, head_dim, dtype=torch.float32, seed=seed)
    sin = angles.sin()
    sin[..., : head_dim // 2] *= -1
    return angles.cos(), sin


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim,num_heads", [(16, 5), (8, 2)])
def test_rotary_matches_reference_in_place_on_strided_view(dtype, head_dim, num_heads):
    """RoPE on the q+k columns of a qkv row (v untouched), rotated in place."""
    qkv = _randn(4, (num_heads + 1) * head_dim, dtype=dtype)
    cos, sin = _rope_rows(4, head_dim)
    qk = qkv[:, : num_heads * head_dim]
    want = fused_ops.rotary_embedding_ref(qk, cos, sin, head_dim)
    v_before = qkv[:, num_heads * head_dim :].clone()
    got = fused_ops.rotary_embedding(qk, cos, sin, head_dim)
    torch.testing.assert_close(got, want, atol=TOL[dtype], rtol=TOL[dtype])
    assert got.data_ptr() == qkv.data_ptr()
    assert torch.equal(qkv[:, num_heads * head_dim :], v_before)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_llama7b_shapes_bf16_on_gpu():
    """The Llama-2-7B decode shapes in bf16, on the real device."""
    tol = TOL[torch.bfloat16]
    x, residual = _randn(32, 4096, dtype=torch.bfloat16), _randn(32, 4096, dtype=torch.bfloat16, seed=1)
    weight = _randn(4096, dtype=torch.bfloat16, seed=2)
    want = fused_ops.add_rms_norm_ref(x, residual, weight, 1e-5)
    got = fused_ops.add_rms_norm(x.clone(), residual.clone(), weight, 1e-5)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=tol, rtol=tol)
    gate_up = _randn(32, 2 * 11008, dtype=torch.bfloat16)
    torch.testing.assert_close(
        fused_ops.silu_and_mul(gate_up), fused_ops.silu_and_mul_ref(gate_up), atol=tol, rtol=tol
    )
    qkv = _randn(32, 3 * 4096, dtype=torch.bfloat16)
    cos, sin = _rope_rows(32, 128)
    want_qk = fused_ops.rotary_embedding_ref(qkv[:, :8192], cos, sin, 128)
    got_qk = fused_ops.rotary_embedding(qkv[:, :8192], cos, sin, 128)
    torch.testing.assert_close(got_qk, want_qk, atol=tol, rtol=tol)


def test_fp32_rms_norm_reference_is_bit_identical_to_hf_expression():
    """The fp32 reference runs as one fused op; on the CPU (where the engine runs it) it must round
    exactly as HF's Llama RMSNorm."""
    x, weight = _randn(8, 96, dtype=torch.float32).cpu() * 7, _randn(96, dtype=torch.float32, seed=1).cpu()
    variance = x.pow(2).mean(-1, keepdim=True)
    assert torch.equal(fused_ops.rms_norm_ref(x, weight, 1e-5), weight * (x * torch.rsqrt(variance + 1e-5)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_reference_out_argument_writes_in_place(dtype):
    """The CPU path writes the rotated q and k columns back into the qkv row; v stays as it was."""
    qkv = _randn(4, 3 * 16, dtype=dtype)
    cos, sin = _rope_rows(4, 16)
    want = fused_ops.rotary_embedding_ref(qkv[:, :32], cos, sin, 16)
    v_before = qkv[:, 32:].clone()
    got = fused_ops.rotary_embedding_ref(qkv[:, :32], cos, sin, 16, out=qkv[:, :32])
    assert torch.equal(qkv[:, :32], want) and torch.equal(got, want)
    assert torch.equal(qkv[:, 32:], v_before)
