"""Prefill GEMMs: how close a Triton GEMM gets to cuBLAS (the precondition for a LoRA-fused prefill GEMM).

Run from the repository root on a GPU: ``python -m benchmarks.gemm_prefill_triton --out X.json``.
``out = x @ W^T`` in bf16 for the Llama-2-7B projections at 4096 tokens: cuBLAS (``torch.matmul``)
against a tiled Triton GEMM over pointers and one over tensor descriptors (TMA), each under a few tile
configurations. Medians of CUDA-graph replays with the L2 cache cleared before each.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
import triton
import triton.language as tl

from benchmarks.common import bench_us, environment, format_table

log = logging.getLogger("benchmarks.gemm_prefill_triton")

SHAPES = {"o 4096>4096": (4096, 4096), "qkv 4096>12288": (4096, 12288), "gate_up 4096>22016": (4096, 22016)}
SHAPES["down 11008>4096"] = (11008, 4096)
CONFIGS = [  # block_m, block_n, block_k, num_stages, num_warps
    (128, 256, 64, 3, 8),
    (128, 256, 64, 4, 8),
    (128, 128, 64, 4, 8),
    (128, 128, 64, 5, 4),
    (256, 128, 64, 3, 8),
]


@triton.jit
def _tile_ids(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    pid = tl.program_id(0)
    tiles_m, tiles_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * tiles_n)
    first_m = group * GROUP_M
    size_m = tl.minimum(tiles_m - first_m, GROUP_M)
    return first_m + (pid % size_m), (pid % (GROUP_M * tiles_n)) // size_m


@triton.jit
def _gemm_ptr(
    x_ptr, w_ptr, o_ptr, M, N, K, sxm, swn, som,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    pid_m, pid_n = _tile_ids(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
    offs_k = tl.arange(0, BLOCK_K)
    x_tile = x_ptr + offs_m[:, None] * sxm + offs_k[None, :]
    w_tile = w_ptr + offs_n[None, :] * swn + offs_k[:, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for _ in range(0, tl.cdiv(K, BLOCK_K)):
        acc = tl.dot(tl.load(x_tile), tl.load(w_tile), acc)
        x_tile += BLOCK_K
        w_tile += BLOCK_K
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows[:, None] < M) & (cols[None, :] < N)
    tl.store(o_ptr + rows[:, None] * som + cols[None, :], acc.to(o_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gemm_tma(
    x_ptr, w_ptr, o_ptr, M, N, K,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    pid_m, pid_n = _tile_ids(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    x_desc = tl.make_tensor_descriptor(x_ptr, shape=[M, K], strides=[K, 1], block_shape=[BLOCK_M, BLOCK_K])
    w_desc = tl.make_tensor_descriptor(w_ptr, shape=[N, K], strides=[K, 1], block_shape=[BLOCK_N, BLOCK_K])
    o_desc = tl.make_tensor_descriptor(o_ptr, shape=[M, N], strides=[N, 1], block_shape=[BLOCK_M, BLOCK_N])
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        a = x_desc.load([pid_m * BLOCK_M, k * BLOCK_K])
        b = w_desc.load([pid_n * BLOCK_N, k * BLOCK_K])
        acc = tl.dot(a, b.T, acc)
    o_desc.store([pid_m * BLOCK_M, pid_n * BLOCK_N], acc.to(o_ptr.dtype.element_ty))


def run_shape(name: str, in_f: int, out_f: int, tokens: int, device: torch.device) -> dict:
    x = torch.randn(tokens, in_f, device=device, dtype=torch.bfloat16)
    w = torch.randn(out_f, in_f, device=device, dtype=torch.bfloat16) / in_f**0.5
    out = torch.empty(tokens, out_f, device=device, dtype=torch.bfloat16)
    expected = x @ w.t()
    row: dict[str, object] = {"case": name, "tokens": tokens, "in": in_f, "out": out_f}
    row["cublas_us"] = bench_us(lambda: torch.matmul(x, w.t(), out=out), device)
    results = []
    for kind, kernel in (("ptr", _gemm_ptr), ("tma", _gemm_tma)):
        for bm, bn, bk, stages, warps in CONFIGS:
            grid = (triton.cdiv(tokens, bm) * triton.cdiv(out_f, bn),)
            extra = (x.stride(0), w.stride(0), out.stride(0)) if kind == "ptr" else ()

            def call(kernel=kernel, bm=bm, bn=bn, bk=bk, stages=stages, warps=warps, grid=grid, extra=extra):
                kernel[grid](
                    x, w, out, tokens, out_f, in_f, *extra,
                    BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8, num_stages=stages, num_warps=warps,
                )  # fmt: skip

            try:
                out.zero_()
                call()
                err = ((out.float() - expected.float()).abs().max() / expected.float().abs().max()).item()
                us = bench_us(call, device)
            except Exception as exc:  # a config that does not compile or fit shared memory
                results.append({"kind": kind, "config": [bm, bn, bk, stages, warps], "error": str(exc)[:200]})
                continue
            results.append({"kind": kind, "config": [bm, bn, bk, stages, warps], "us": us, "rel_err": err})
    row["configs"] = results
    ok = [r for r in results if "us" in r and r["rel_err"] < 1e-2]
    best = min(ok, key=lambda r: r["us"]) if ok else {"us": float("nan"), "config": None, "kind": None}
    row["triton_best_us"], row["triton_best"] = best["us"], f"{best['kind']} {best['config']}"
    row["triton_over_cublas"] = best["us"] / row["cublas_us"]
    row["cublas_tflops"] = 2 * tokens * in_f * out_f / row["cublas_us"] / 1e6
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gemm_prefill_triton.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device("cuda")
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device=device))
    rows = [run_shape(name, i, o, args.tokens, device) for name, (i, o) in SHAPES.items()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"environment": environment(device), "rows": rows}, indent=1))
    columns = ["case", "cublas_us", "cublas_tflops", "triton_best_us", "triton_over_cublas", "triton_best"]
    log.info("\n%s", format_table(rows, columns))


if __name__ == "__main__":
    main()
