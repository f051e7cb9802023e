"""Kernels at real sizes in bf16 on the GPU, and CUDA-graph replay with changing metadata."""

import pytest
import torch

from loraplane.kernels import attention, lora_ops
from loraplane.kernels.lora_meta import LoRAKernelMeta
from loraplane.kernels.testing import POPULARITIES, make_lora_weights, make_slot_ranks, make_token_slots

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
DTYPE = torch.bfloat16


def _lora_delta(x, lora_a, lora_b, meta, widths, kernel):
    y = torch.zeros(len(lora_a), x.shape[0], lora_a[0].shape[1], device="cuda")
    out = torch.zeros(x.shape[0], sum(widths), device="cuda", dtype=DTYPE)
    if kernel:
        lora_ops.add_lora(out, x, lora_a, lora_b, meta, buffer=y)
    else:
        lora_ops.lora_shrink_ref(x, lora_a, y, meta)
        lora_ops.lora_expand_ref(y, lora_b, out, meta)
    return out.float()


@pytest.mark.parametrize("popularity", POPULARITIES)
@pytest.mark.parametrize(
    ("num_tokens", "widths", "max_rank", "ranks"),
    [
        (64, (4096,), 16, (16,)),
        (256, (4096,), 16, (8, 16)),  # the tiled decode path's largest batch
        (32, (4096, 4096, 4096), 64, (16, 64)),
        (64, (4096, 1024, 1024), 64, (8, 16, 64)),
        (1024, (11008, 11008), 64, (8, 64)),
        (4096, (4096,), 16, (16,)),
    ],
)
def test_lora_real_sizes(popularity, num_tokens, widths, max_rank, ranks):
    num_loras = max(64, num_tokens) if popularity == "distinct" else 32
    slots = make_token_slots(popularity, num_tokens, num_loras)
    meta = LoRAKernelMeta(4096, num_loras, "cuda")
    meta.prepare(slots, make_slot_ranks(num_loras, ranks))
    lora_a, lora_b = make_lora_weights(num_loras, max_rank, 4096, widths, DTYPE, "cuda")
    x = torch.randn(num_tokens, 4096, device="cuda", dtype=DTYPE)
    got = _lora_delta(x, lora_a, lora_b, meta, widths, kernel=True)
    want = _lora_delta(x, lora_a, lora_b, meta, widths, kernel=False)
    torch.testing.assert_close(got, want, rtol=3e-2, atol=3e-2)


def _cache(num_seqs, context, kv_heads=8, head_dim=128, block_size=16):
    blocks = num_seqs * (context // block_size)
    k_cache = torch.randn(blocks, block_size, kv_heads, head_dim, device="cuda", dtype=DTYPE)
    v_cache = torch.randn_like(k_cache)
    tables = torch.randperm(blocks, device="cuda", dtype=torch.int32).view(num_seqs, -1)
    return k_cache, v_cache, tables


def test_decode_attention_real_sizes():
    k_cache, v_cache, tables = _cache(16, 2048)
    lens = torch.randint(1, 2049, (16,), device="cuda", dtype=torch.int32)
    q = torch.randn(16, 32, 128, device="cuda", dtype=DTYPE)
    ref = attention.paged_decode_attention_ref(q, k_cache, v_cache, tables, lens, 128**-0.5)
    out = attention.paged_decode_attention(q, k_cache, v_cache, tables, lens, 128**-0.5)
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)


def test_chunked_prefill_attention_real_sizes():
    k_cache, v_cache, tables = _cache(3, 1024)
    q_lens, seq_lens = [512, 300, 1], [512, 1000, 777]
    cu = torch.tensor([0, 512, 812, 813], device="cuda", dtype=torch.int32)
    q = torch.randn(sum(q_lens), 32, 128, device="cuda", dtype=DTYPE)
    lens = torch.tensor(seq_lens, device="cuda", dtype=torch.int32)
    ref = attention.paged_prefill_attention_ref(q, k_cache, v_cache, tables, cu, lens, 128**-0.5)
    out = attention.paged_prefill_attention(q, k_cache, v_cache, tables, cu, lens, 128**-0.5)
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)


def test_cuda_graph_replay_follows_changing_metadata():
    num_tokens, num_loras, widths = 64, 16, (1024, 256, 256)
    lora_a, lora_b = make_lora_weights(num_loras, 32, 1024, widths, DTYPE, "cuda")
    meta = LoRAKernelMeta(num_tokens, num_loras, "cuda")
    x = torch.randn(num_tokens, 1024, device="cuda", dtype=DTYPE)
    k_cache, v_cache, tables = _cache(num_tokens, 256)
    q = torch.randn(num_tokens, 32, 128, device="cuda", dtype=DTYPE)
    lens = torch.full((num_tokens,), 256, device="cuda", dtype=torch.int32)
    out = torch.zeros(num_tokens, sum(widths), device="cuda", dtype=DTYPE)
    buffer = torch.zeros(3, num_tokens, 32, device="cuda")

    def step():
        out.zero_()
        lora_ops.add_lora(out, x, lora_a, lora_b, meta, buffer=buffer)
        return attention.paged_decode_attention(q, k_cache, v_cache, tables, lens, 128**-0.5)

    meta.prepare(make_token_slots("uniform", num_tokens, num_loras), make_slot_ranks(num_loras, (32,)))
    torch.cuda.synchronize()
    step()  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        attn_out = step()
    for seed, popularity in enumerate(("zipf", "identical", "base_mixed", "none")):
        if popularity == "none":
            slots = torch.full((num_tokens,), -1, dtype=torch.int32)
        else:
            slots = make_token_slots(popularity, num_tokens, num_loras, seed)
        meta.prepare(slots, make_slot_ranks(num_loras, (8, 16, 32), seed))
        lens.copy_(torch.randint(1, 257, (num_tokens,), generator=torch.Generator().manual_seed(seed)))
        graph.replay()
        want = _lora_delta(x, lora_a, lora_b, meta, widths, kernel=False)
        torch.testing.assert_close(out.float(), want, rtol=3e-2, atol=3e-2)
        ref = attention.paged_decode_attention_ref(q, k_cache, v_cache, tables, lens, 128**-0.5)
        torch.testing.assert_close(attn_out.float(), ref.float(), rtol=2e-2, atol=2e-2)
