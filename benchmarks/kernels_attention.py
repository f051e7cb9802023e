"""Paged-attention rows of ``benchmarks.kernels``: decode against HBM bandwidth, prefill in TFLOP/s."""

from __future__ import annotations

import torch

from benchmarks.common import bench_us
from loraplane.kernels import attention, triton_attention_decode

HEAD_DIM, HEADS, KV_HEADS, BLOCK_SIZE = 128, 32, 8, 16


def _cache(
    num_seqs: int, context: int, device: torch.device, dtype: torch.dtype, head_dim: int, kv_heads: int
):
    blocks_per_seq = -(-context // BLOCK_SIZE)
    shape = (num_seqs * blocks_per_seq, BLOCK_SIZE, kv_heads, head_dim)
    k_cache = torch.randn(shape, device=device, dtype=dtype)
    v_cache = torch.randn(shape, device=device, dtype=dtype)
    tables = torch.randperm(shape[0], device=device).to(torch.int32).view(num_seqs, blocks_per_seq)
    return k_cache, v_cache, tables


def decode_row(
    batch: int, context: int, device, dtype, ceil, head_dim=HEAD_DIM, heads=HEADS, kv_heads=KV_HEADS
):
    k_cache, v_cache, tables = _cache(batch, context, device, dtype, head_dim, kv_heads)
    q = torch.randn(batch, heads, head_dim, device=device, dtype=dtype)
    lens = torch.full((batch,), context, device=device, dtype=torch.int32)
    us = bench_us(
        lambda: attention.paged_decode_attention(q, k_cache, v_cache, tables, lens, head_dim**-0.5), device
    )
    kv_bytes = 2 * batch * context * kv_heads * head_dim * k_cache.element_size()
    gbps = kv_bytes / us / 1e3
    name = f"decode B{batch} ctx{context} GQA {heads}/{kv_heads}"
    return {
        "case": name,
        "us": us,
        "gbps": gbps,
        "pct_hbm": 100 * gbps / ceil["copy_gbps"],
        "kv_bytes": kv_bytes,
    }


def prefill_row(
    num_seqs: int, q_len: int, device, dtype, ceil, head_dim=HEAD_DIM, heads=HEADS, kv_heads=KV_HEADS
):
    k_cache, v_cache, tables = _cache(num_seqs, q_len, device, dtype, head_dim, kv_heads)
    q = torch.randn(num_seqs * q_len, heads, head_dim, device=device, dtype=dtype)
    cu = torch.arange(0, num_seqs + 1, device=device, dtype=torch.int32) * q_len
    lens = torch.full((num_seqs,), q_len, device=device, dtype=torch.int32)
    us = bench_us(
        lambda: attention.paged_prefill_attention(
            q, k_cache, v_cache, tables, cu, lens, head_dim**-0.5, max_seqlen_q=q_len
        ),
        device,
    )
    flops = num_seqs * heads * 2 * 2 * head_dim * q_len * (q_len + 1) / 2  # causal QK^T and PV
    tflops = flops / us / 1e6
    name = f"prefill {num_seqs}x{q_len} causal"
    return {"case": name, "us": us, "tflops": tflops, "pct_peak": 100 * tflops / ceil["bf16_tflops"]}


def store_row(num_tokens: int, device, dtype, ceil):
    k_cache, v_cache, _ = _cache(1, num_tokens * 2, device, dtype, HEAD_DIM, KV_HEADS)
    key = torch.randn(num_tokens, KV_HEADS, HEAD_DIM, device=device, dtype=dtype)
    value = torch.randn_like(key)
    slots = torch.randperm(num_tokens * 2, device=device)[:num_tokens]
    us = bench_us(lambda: attention.store_kvcache(key, value, k_cache, v_cache, slots), device)
    moved = 4 * key.numel() * key.element_size()
    gbps = moved / us / 1e3
    return {
        "case": f"store_kvcache T{num_tokens}",
        "us": us,
        "gbps": gbps,
        "pct_hbm": 100 * gbps / ceil["copy_gbps"],
    }


def attention_rows(
    device: torch.device, dtype: torch.dtype, ceil: dict[str, float], smoke: bool
) -> list[dict]:
    if smoke:
        small = dict(head_dim=16, heads=4, kv_heads=2)
        return [
            decode_row(2, 40, device, dtype, ceil, **small),
            prefill_row(2, 24, device, dtype, ceil, **small),
        ]
    return [
        decode_row(64, 2048, device, dtype, ceil),
        decode_row(256, 512, device, dtype, ceil),
        decode_row(8, 8192, device, dtype, ceil),
        prefill_row(4, 1024, device, dtype, ceil),
        prefill_row(1, 4096, device, dtype, ceil),
        store_row(4096, device, dtype, ceil),
    ]


def engine_decode_sweep(device, dtype, ceil, batch=32, context=192, max_context=1024, heads=32, kv_heads=32):
    """Launch configurations of decode attention for the engine's case: a graph-captured step whose
    block tables are `max_context` wide while the sequences hold `context` tokens (MHA by default)."""
    blocks_per_seq = max_context // BLOCK_SIZE
    k_cache, v_cache, _ = _cache(batch, max_context, device, dtype, HEAD_DIM, kv_heads)
    tables = torch.randperm(k_cache.shape[0], device=device).to(torch.int32).view(batch, blocks_per_seq)
    q = torch.randn(batch, heads, HEAD_DIM, device=device, dtype=dtype)
    lens = torch.full((batch,), context, device=device, dtype=torch.int32)
    kv_bytes = 2 * batch * context * kv_heads * HEAD_DIM * k_cache.element_size()
    rows = []
    for block_n in (32, 64):
        for num_warps in (2, 4):
            for num_stages in (2, 3):
                for splits in (1, 4, 16):
                    config = dict(block_n=block_n, num_warps=num_warps, num_stages=num_stages, splits=splits)
                    us = bench_us(
                        lambda c=config: triton_attention_decode.paged_decode_attention(
                            q, k_cache, v_cache, tables, lens, HEAD_DIM**-0.5, **c
                        ),
                        device,
                    )
                    gbps = kv_bytes / us / 1e3
                    rows.append({**config, "us": us, "pct_hbm": 100 * gbps / ceil["copy_gbps"]})
    rows.sort(key=lambda r: r["us"])
    return rows


def main() -> None:
    """`python -m benchmarks.kernels_attention --engine-sweep [--out FILE]`: the sweep above on a GPU."""
    import argparse
    import json

    from benchmarks.common import environment, format_table, measure_ceilings

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--engine-sweep", action="store_true", required=True)
    parser.add_argument("--context", type=int, default=192)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device("cuda")
    ceil = measure_ceilings(device)
    rows = engine_decode_sweep(device, torch.bfloat16, ceil, context=args.context)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"environment": environment(device), "ceilings": ceil, "rows": rows}, f, indent=1)
    print(format_table(rows[:12], ["block_n", "num_warps", "num_stages", "splits", "us", "pct_hbm"]))


if __name__ == "__main__":
    main()
