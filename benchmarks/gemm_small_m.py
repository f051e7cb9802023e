"""Decode-sized GEMMs of the Llama-2-7B layer under cuBLAS settings: which one streams weights fastest.

    python -m benchmarks.gemm_small_m [--out FILE]      # on a GPU

For each projection (qkv 4096->12288, o 4096->4096, gate_up 4096->22016, down 11008->4096) and batch
(1, 32, 256) it times `F.linear(x, W)` (CUDA-graph replay, L2 cleared) with the default settings, with
bf16 reduced-precision reductions disallowed (cuBLAS then avoids some split-K kernels), with the
cuBLASLt backend preferred, and with the weight stored transposed (`x @ W_t`), and reports the
achieved weight bandwidth against the measured copy ceiling.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from benchmarks.common import bench_us, environment, format_table, measure_ceilings

SHAPES = {"qkv": (4096, 12288), "o": (4096, 4096), "gate_up": (4096, 22016), "down": (11008, 4096)}


def _variants():
    matmul = torch.backends.cuda.matmul

    def default():
        return None

    def no_reduced_precision():
        matmul.allow_bf16_reduced_precision_reduction = False
        return lambda: setattr(matmul, "allow_bf16_reduced_precision_reduction", True)

    def cublaslt():
        torch.backends.cuda.preferred_blas_library("cublaslt")
        return lambda: torch.backends.cuda.preferred_blas_library("cublas")

    return {"default": default, "no_reduced_precision": no_reduced_precision, "cublaslt": cublaslt}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device("cuda")
    ceil = measure_ceilings(device)
    rows = []
    for name, (k, n) in SHAPES.items():
        weight = torch.randn(n, k, device=device, dtype=torch.bfloat16)
        weight_t = weight.t().contiguous()
        for batch in args.batches:
            x = torch.randn(batch, k, device=device, dtype=torch.bfloat16)
            row = {"gemm": name, "batch": batch}
            for label, apply in _variants().items():
                undo = apply()
                row[label] = bench_us(lambda x=x, w=weight: F.linear(x, w), device)
                if undo:
                    undo()
            row["transposed"] = bench_us(lambda x=x, w=weight_t: x @ w, device)
            best = min(row[c] for c in ("default", "no_reduced_precision", "cublaslt", "transposed"))
            row["best_pct_hbm"] = 100 * (2 * n * k / best / 1e3) / ceil["copy_gbps"]
            rows.append(row)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"environment": environment(device), "ceilings": ceil, "rows": rows}, f, indent=1)
    columns = ["gemm", "batch", "default", "no_reduced_precision", "cublaslt", "transposed", "best_pct_hbm"]
    print(format_table(rows, columns))


if __name__ == "__main__":
    main()
