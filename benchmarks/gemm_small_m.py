"""Decode-sized GEMMs of the Llama-2-7B layer: cuBLAS (`F.linear`) against the Triton skinny GEMM.

    python -m benchmarks.gemm_small_m [--out FILE]      # on a GPU

For each projection (qkv 4096->12288, o 4096->4096, gate_up 4096->22016, down 11008->4096) and batch,
a CUDA graph runs the GEMM on 8 different weight copies back to back (as consecutive layers do, so no
weight is in L2) and the replay time is divided by 8. Every Triton configuration of the sweep is kept
in the JSON; the table shows cuBLAS, the default and the best Triton configuration, and the weight
bandwidth they reach against the measured copy ceiling.
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch
import torch.nn.functional as F
import triton

from benchmarks.common import environment, format_table, measure_ceilings
from loraplane.kernels import triton_gemm

SHAPES = {"qkv": (4096, 12288), "o": (4096, 4096), "gate_up": (4096, 22016), "down": (11008, 4096)}
COPIES = 8
SWEEP = [
    triton_gemm.GemmConfig(block_n, block_k, stages, 4)
    for block_n, block_k, stages in itertools.product((16, 32, 64), (128, 256), (4, 6))
]


def chain_us(fn, weights: list[torch.Tensor]) -> float:
    """Microseconds per call of ``fn(w)`` over ``weights`` replayed from one CUDA graph."""
    for w in weights:
        fn(w)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for w in weights:
            fn(w)
    ms = triton.testing.do_bench(graph.replay, warmup=5, rep=50, return_mode="median")
    return ms * 1e3 / len(weights)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device("cuda")
    ceil = measure_ceilings(device)
    rows = []
    for name, (k, n) in SHAPES.items():
        weights = [torch.randn(n, k, device=device, dtype=torch.bfloat16) for _ in range(COPIES)]
        for batch in args.batches:
            x = torch.randn(batch, k, device=device, dtype=torch.bfloat16)
            row = {
                "gemm": name,
                "batch": batch,
                "cublas_us": chain_us(lambda w, x=x: F.linear(x, w), weights),
            }
            configs = []
            for cfg in SWEEP:
                try:
                    us = chain_us(lambda w, x=x, c=cfg: triton_gemm.skinny_gemm(x, w, config=c), weights)
                except triton.runtime.errors.OutOfResources:
                    continue  # too much shared memory for this many stages
                configs.append({**cfg.__dict__, "us": us})
            best = min(configs, key=lambda c: c["us"])
            default = [c["us"] for c in configs if c == {**triton_gemm.GemmConfig().__dict__, "us": c["us"]}]
            row.update(
                triton_default_us=default[0] if default else None, triton_best_us=best["us"], configs=configs
            )
            row["best_config"] = {key: best[key] for key in ("block_n", "block_k", "num_stages", "num_warps")}
            for label in ("cublas_us", "triton_best_us"):
                row[label.replace("_us", "_pct_hbm")] = (
                    100 * (2 * n * k / row[label] / 1e3) / ceil["copy_gbps"]
                )
            rows.append(row)
        del weights
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"environment": environment(device), "ceilings": ceil, "rows": rows}, f, indent=1)
    for row in rows:
        row["best"] = "/".join(str(v) for v in row["best_config"].values())
    columns = ["gemm", "batch", "cublas_us", "triton_default_us", "triton_best_us", "best", "cublas_pct_hbm"]
    print(format_table(rows, columns + ["triton_best_pct_hbm"]))


if __name__ == "__main__":
    main()
