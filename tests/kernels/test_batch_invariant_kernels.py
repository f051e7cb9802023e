"""Batch-invariant mode of the Triton kernels (interpreter on CPU, real kernels on CUDA): a row's result is
bit-identical alone and inside a larger batch, and still matches the reference."""

import pytest
import torch
import torch.nn.functional as F

from loraplane.kernels import attention, lora_ops, triton_gemm
from loraplane.kernels.dispatch import batch_invariant_mode
from loraplane.kernels.lora_meta import LoRAKernelMeta
from loraplane.kernels.testing import make_lora_weights
from tests.kernels.test_attention import DEVICE, _paged_cache


@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (4, 2)])
def test_decode_attention_row_alone_equals_row_in_longer_batch(heads, kv_heads):
    # 600 positions: three fixed partitions for the long sequence, one for the short one
    k_cache, v_cache, tables, _ = _paged_cache([40, 600, 7], kv_heads, 32, torch.float32)
    q = torch.randn(3, heads, 32).to(DEVICE)
    lens = torch.tensor([40, 600, 7], dtype=torch.int32, device=DEVICE)
    with batch_invariant_mode():
        batch = attention.paged_decode_attention(q, k_cache, v_cache, tables, lens, 32**-0.5)
        alone = attention.paged_decode_attention(q[:1], k_cache, v_cache, tables[:1, :5], lens[:1], 32**-0.5)
    assert torch.equal(alone[0], batch[0])
    ref = attention.paged_decode_attention_ref(q, k_cache, v_cache, tables, lens, 32**-0.5)
    torch.testing.assert_close(batch, ref, rtol=1e-4, atol=1e-4)


def test_gemm_row_alone_equals_row_in_batch_of_70():
    x = torch.randn(70, 96).to(DEVICE, torch.float16)
    w = (torch.randn(80, 96) * 0.1).to(DEVICE, torch.float16)
    cfg = triton_gemm.INVARIANT_CONFIG
    batch = triton_gemm.skinny_gemm(x, w, None, cfg)
    alone = triton_gemm.skinny_gemm(x[5:6], w, None, cfg)
    assert torch.equal(alone[0], batch[5])
    torch.testing.assert_close(batch.float(), F.linear(x.float(), w.float()), rtol=2e-2, atol=2e-2)


def test_add_lora_token_alone_equals_token_in_batch():
    num_loras, rank, widths = 4, 16, (48, 16)
    lora_a, lora_b = make_lora_weights(num_loras, rank, 64, widths, torch.float16, DEVICE)
    ranks = torch.tensor([16, 8, 4, 16], dtype=torch.int32)
    x = torch.randn(40, 64).to(DEVICE, torch.float16)
    slots = torch.tensor([i % 3 for i in range(40)], dtype=torch.int32)

    def run(rows):
        meta = LoRAKernelMeta(64, num_loras, DEVICE)
        meta.prepare(slots[rows], ranks)
        out = torch.zeros(len(rows), sum(widths), dtype=torch.float16, device=DEVICE)
        lora_ops.add_lora(out, x[rows], lora_a, lora_b, meta)
        return out

    with batch_invariant_mode():
        batch = run(list(range(40)))
        alone = run([7])
    assert torch.equal(alone[0], batch[7])
    expected = torch.zeros_like(batch)
    meta = LoRAKernelMeta(64, num_loras, DEVICE)
    meta.prepare(slots, ranks)
    lora_ops.add_lora_ref(expected, x, lora_a, lora_b, meta)
    torch.testing.assert_close(batch.float(), expected.float(), rtol=2e-2, atol=2e-2)
