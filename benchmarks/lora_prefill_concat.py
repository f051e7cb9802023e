"""Prefill multi-LoRA folded into the base GEMM: ``[x | y_scattered] @ [W | B_all]^T`` in one cuBLAS call.

Run from the repository root on a GPU: ``python -m benchmarks.lora_prefill_concat --out X.json``.
Times the base GEMM, the SGMV shrink + expand after it, and the concatenated form: the shrink of every
active adapter as one GEMM ``x @ A_all^T``, each token's own slot kept (the others zeroed) in the
tail columns of a wide input, then one GEMM over the widened K. Medians of CUDA-graph replays with the
L2 cache cleared before each.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from benchmarks.common import bench_us, environment, format_table
from loraplane.kernels.lora_meta import LoRAKernelMeta
from loraplane.kernels.lora_ops import add_lora
from loraplane.kernels.testing import make_lora_weights, make_token_slots

log = logging.getLogger("benchmarks.lora_prefill_concat")


def run(tokens: int, loras: int, rank: int, in_f: int, out_f: int, device: torch.device) -> dict:
    dtype = torch.bfloat16
    slots = make_token_slots("uniform", tokens, loras)
    meta = LoRAKernelMeta(tokens, loras, device)
    meta.prepare(slots, torch.full((loras,), rank, dtype=torch.int32))
    (a,), (b,) = make_lora_weights(loras, rank, in_f, (out_f,), dtype, device)
    x = torch.randn(tokens, in_f, device=device, dtype=dtype)
    w = torch.randn(out_f, in_f, device=device, dtype=dtype)
    out = torch.empty(tokens, out_f, device=device, dtype=dtype)
    buffer = torch.zeros(1, tokens, rank, device=device)
    wide_k = in_f + loras * rank
    x_wide = torch.zeros(tokens, wide_k, device=device, dtype=dtype)
    x_wide[:, :in_f] = x
    w_wide = torch.empty(out_f, wide_k, device=device, dtype=dtype)
    w_wide[:, :in_f] = w
    w_wide[:, in_f:].view(out_f, loras, rank).copy_(b.permute(1, 0, 2))
    a_all = a.reshape(loras * rank, in_f)
    onehot = torch.nn.functional.one_hot(slots.long().clamp(min=0), loras).to(device, dtype)
    onehot *= (slots >= 0).to(device, dtype)[:, None]
    onehot = onehot[:, :, None]
    y_all = torch.empty(tokens, loras * rank, device=device, dtype=dtype)
    tail = x_wide[:, in_f:].view(tokens, loras, rank)

    def base():
        torch.matmul(x, w.t(), out=out)

    def sgmv():
        torch.matmul(x, w.t(), out=out)
        add_lora(out, x, [a], [b], meta, buffer=buffer)

    def concat():
        torch.matmul(x_wide[:, :in_f], a_all.t(), out=y_all)
        torch.mul(y_all.view(tokens, loras, rank), onehot, out=tail)
        torch.matmul(x_wide, w_wide.t(), out=out)

    def wide_only():
        torch.matmul(x_wide, w_wide.t(), out=out)

    def shrink_only():
        torch.matmul(x_wide[:, :in_f], a_all.t(), out=y_all)

    concat()
    expected = x.float() @ w.float().t()
    for s in range(loras):
        rows = (slots == s).to(device)
        expected[rows] += (x[rows].float() @ a[s].float().t()) @ b[s].float().t()
    err = ((out.float() - expected).abs().max() / expected.abs().max()).item()
    row = {"tokens": tokens, "loras": loras, "rank": rank, "in": in_f, "out": out_f, "concat_rel_err": err}
    for name, fn in (("base", base), ("sgmv", sgmv), ("concat", concat), ("wide", wide_only)):
        row[f"{name}_us"] = bench_us(fn, device)
    row["shrink_gemm_us"] = bench_us(shrink_only, device)
    for name in ("sgmv", "concat"):
        row[f"{name}_lora_us"] = row[f"{name}_us"] - row["base_us"]
        row[f"{name}_lora_pct"] = 100 * row[f"{name}_lora_us"] / row["base_us"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/lora_prefill_concat.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device("cuda")
    rows = [
        run(4096, 8, 16, 4096, 4096, device),
        run(4096, 8, 64, 4096, 4096, device),
        run(4096, 32, 16, 4096, 4096, device),
        run(2048, 8, 16, 4096, 11008, device),
        run(2048, 8, 16, 11008, 4096, device),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"environment": environment(device), "rows": rows}, indent=1))
    columns = ["tokens", "loras", "rank", "in", "out", "base_us", "sgmv_lora_us", "sgmv_lora_pct"]
    columns += ["concat_lora_us", "concat_lora_pct", "wide_us", "shrink_gemm_us", "concat_rel_err"]
    log.info("\n%s", format_table(rows, columns))


if __name__ == "__main__":
    main()
