"""Decode multi-LoRA: the tiled decode kernels against the one-launch fused kernel and the base GEMM.

Run from the repository root on a GPU (bf16): ``python -m benchmarks.kernels_lora_decode --out X.json``,
or ``TRITON_INTERPRET=1 python -m benchmarks.kernels_lora_decode --smoke`` on the CPU (tiny shapes
under the Triton interpreter; checks the script). Times are
medians of CUDA-graph replays with the L2 cache cleared before each (cold weights). Besides each
path's time the script sweeps the decode kernels' configs, times ``LoRAKernelMeta.prepare`` on the
host, and prints a table last.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from benchmarks.common import (
    bench_us,
    environment,
    format_table,
    measure_ceilings,
)
from benchmarks.kernels import LoRACase, LoRASetup, context_columns

log = logging.getLogger("benchmarks.kernels_lora_decode")

CASES = [
    LoRACase("T1 r16 4096>4096", 1, 1, "distinct", 16, 4096, (4096,)),
    LoRACase("T8 distinct r16 4096>4096", 8, 8, "distinct", 16, 4096, (4096,)),
    LoRACase("T64 distinct r16 4096>4096", 64, 64, "distinct", 16, 4096, (4096,), 44.8, 18.2),
    LoRACase("T64 distinct r16 qkv 3x4096", 64, 64, "distinct", 16, 4096, (4096,) * 3, 329.0, 38.1),
    LoRACase("T32 distinct r16 qkv 3x4096", 32, 32, "distinct", 16, 4096, (4096,) * 3),
    LoRACase("T32 distinct r16 o 4096>4096", 32, 32, "distinct", 16, 4096, (4096,)),
    LoRACase("T256 over 32 r16 4096>4096", 256, 32, "uniform", 16, 4096, (4096,)),
    LoRACase("T128 distinct r16 qkv 3x4096", 128, 128, "distinct", 16, 4096, (4096,) * 3),
    LoRACase("T128 distinct r16 4096>4096", 128, 128, "distinct", 16, 4096, (4096,)),
    LoRACase("T128 over 32 r16 4096>4096", 128, 32, "uniform", 16, 4096, (4096,)),
    LoRACase("T256 distinct r16 4096>4096", 256, 256, "distinct", 16, 4096, (4096,), 135.5, 24.3),
    LoRACase("T32 distinct r64 4096>11008", 32, 32, "distinct", 64, 4096, (11008,), 73.4, 35.0),
    LoRACase("T512 over 32 r16 4096>4096", 512, 32, "uniform", 16, 4096, (4096,)),
    LoRACase("T1024 over 32 r16 4096>4096", 1024, 32, "uniform", 16, 4096, (4096,)),
    LoRACase("T32 distinct r16 gate_up 2x11008", 32, 32, "distinct", 16, 4096, (11008, 11008)),
    LoRACase("T32 distinct r16 down 11008>4096", 32, 32, "distinct", 16, 11008, (4096,)),
    LoRACase("T256 over 32 r16 down 11008>4096", 256, 32, "uniform", 16, 11008, (4096,)),
]


def _smoke_cases() -> list[LoRACase]:
    return [
        LoRACase(f"smoke {c.name}", min(c.num_tokens, 8), min(c.num_loras, 8), c.popularity, 16, 64, (32,))
        for c in CASES[:2]
    ]


def _candidates(setup: LoRASetup):
    """The default config, then the reduction split halved/doubled and other column blocks and warps."""
    from loraplane.kernels import triton_lora_decode as dec

    case = setup.case
    default = dec.decode_config(
        case.num_tokens, min(3, len(case.widths)), case.num_loras, case.in_features, setup.x.device
    )
    configs = {default}
    for split in (default.split_k // 2, default.split_k, default.split_k * 2):
        if 1 <= split <= 16:
            share = 1 << max(4, (case.in_features // split - 1).bit_length())
            for block_n in (128, 256, 512):
                configs.add(dec.DecodeConfig(split, min(share, 512), block_n))
    configs.add(dec.DecodeConfig(default.split_k, default.block_k, default.block_n, 8, 8))
    configs.add(dec.DecodeConfig(default.split_k, default.block_k, 128, 4, 2))
    return default, sorted(configs, key=str)


def _fused_candidates(setup: LoRASetup, full: bool):
    """The fused kernel's default config, the one-role kernel's, then producer/consumer splits and tiles.

    ``full`` sweeps split_k x split_n x tile size; otherwise a few neighbours of the default.
    """
    from loraplane.kernels import triton_lora_fused as fused

    case = setup.case
    shape = (case.num_tokens, min(3, len(case.widths)), case.rank, case.in_features, max(case.widths))
    default = fused.fused_config(*shape, setup.x.device)
    configs = {default, fused.fused_config(*shape, setup.x.device, split_k=0)}
    if not default.split_k and not full:
        return default, sorted(configs, key=str)
    if full:
        grid = [(k, n, t, 4) for k in (1, 2, 4, 8) for n in (1, 2, 4) for t in (8192, 16384)]
    else:
        k, n = default.split_k, default.split_n
        grid = [(k, n, t, w) for t in (4096, 8192, 16384) for w in (4, 8)]
        grid += [(max(1, k // 2), n, 8192, 8), (min(8, 2 * k), n, 8192, 8), (k, max(1, n // 2), 8192, 8)]
        grid += [(k, n + 1, 8192, 8), (k, n + 2, 8192, 8)]
    for k, n, tile, warps in grid:
        if k * (1 << (case.rank - 1).bit_length()) <= fused.COOP_PARTIALS:
            configs.add(
                fused.fused_config(
                    *shape, setup.x.device, split_k=k, split_n=n, tile_elements=tile, num_warps=warps
                )
            )
    return default, sorted(configs, key=str)


def run_case(
    case: LoRACase, device: torch.device, dtype: torch.dtype, ceil: dict, sweep: str, full_sweep: bool = False
) -> dict:
    from loraplane.kernels import triton_lora_fused

    setup = LoRASetup(case, device, dtype)
    row: dict[str, object] = {"case": case.name, "peer_us": case.peer_us}
    row["base_us"] = bench_us(setup.base, device)
    row["add_lora_us"] = bench_us(setup.lora, device)
    row["decode_us"] = bench_us(setup.decode, device)
    if case.num_tokens <= triton_lora_fused.TUNED_MAX_TOKENS:
        row["fused_us"] = bench_us(setup.fused, device)
    row["split_us"] = bench_us(setup.split, device)
    adapter, _, _ = setup.work(setup.x.element_size())
    row["adapter_mb"] = adapter / 1e6
    if sweep == "all":
        default, configs = _candidates(setup)
        row["configs"] = [
            {"config": str(c), "default": c == default, "us": bench_us(lambda c=c: setup.decode(c), device)}
            for c in configs
        ]
        best = min(row["configs"], key=lambda r: r["us"])
        row["best_us"], row["best_config"] = best["us"], best["config"]
    if sweep != "none" and "fused_us" in row:
        default, configs = _fused_candidates(setup, full=full_sweep)
        row["fused_configs"] = [
            {
                "config": str(c),
                "default": c == default,
                "us": bench_us(lambda c=c: setup.fused(c), device),
            }
            for c in configs
        ]
        best = min(row["fused_configs"], key=lambda r: r["us"])
        row["fused_best_us"], row["fused_best_config"] = best["us"], best["config"]
    if device.type == "cuda" and case.num_tokens <= triton_lora_fused.TUNED_MAX_TOKENS:
        row.update(context_columns(setup, device, dtype, ceil))
    row["decode_over_base"] = row["decode_us"] / row["base_us"]
    row["lora_over_base"] = row["add_lora_us"] / row["base_us"]
    row["pct_hbm_adapter_lora"] = 100 * adapter / row["add_lora_us"] / 1e3 / ceil["copy_gbps"]
    row["pct_hbm_adapter"] = 100 * adapter / row["decode_us"] / 1e3 / ceil["copy_gbps"]
    row["prepare_host_us"] = _prepare_us(setup, case)
    log.info("%s: %s", case.name, {k: v for k, v in row.items() if not k.endswith("configs")})
    return row


def _prepare_us(setup: LoRASetup, case: LoRACase, calls: int = 200) -> float:
    """Host microseconds of one ``LoRAKernelMeta.prepare`` (grouping, staging, the copy's launch)."""
    from loraplane.kernels.testing import make_token_slots

    slots = make_token_slots(case.popularity, case.num_tokens, case.num_loras)
    ranks = torch.full((case.num_loras,), case.rank, dtype=torch.int32)
    setup.meta.prepare(slots, ranks)
    start = time.perf_counter()
    for _ in range(calls):
        setup.meta.prepare(slots, ranks)
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (Triton interpreter)")
    parser.add_argument(
        "--sweep", choices=("all", "fused", "none"), default="all", help="which kernels' configs to sweep"
    )
    parser.add_argument(
        "--only", default=None, help="run the cases whose name contains one of these comma-separated texts"
    )
    parser.add_argument(
        "--full-sweep", action="store_true", help="fused kernel: split_k x split_n x tile grid on every case"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/kernels_lora_decode.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float16
    result: dict[str, object] = {"environment": environment(device), "dtype": str(dtype)}
    result["ceilings"] = ceil = measure_ceilings(device)
    rows = result["rows"] = []
    cases = _smoke_cases() if args.smoke else CASES
    cases = [c for c in cases if args.only is None or any(t in c.name for t in args.only.split(","))]
    for case in cases:
        rows.append(_run(case, device, dtype, ceil, args.sweep, args.full_sweep))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    env = result["environment"]
    columns = [
        "case",
        "base_us",
        "fused_us",
        "fused_best_us",
        "decode_us",
        "best_us",
        "split_us",
        "add_lora_us",
    ]
    columns += ["peer_us", "lora_over_base", "pct_hbm_adapter_lora", "read_adapter_bytes_us", "adapter_mb"]
    columns += ["lora_seq_us", "base_seq_us", "lora_over_base_seq", "pct_hbm_adapter_seq"]
    log.info("best configs:\n%s", "\n".join(f"{r['case']}: {r.get('best_config')}" for r in rows))
    log.info("best fused:\n%s", "\n".join(f"{r['case']}: {r.get('fused_best_config')}" for r in rows))
    log.info("\n%s", format_table(rows, columns))
    log.info(
        "card %s, torch %s, triton %s; ceiling %.0f GB/s copy",
        env.get("card"),
        env["torch"],
        env["triton"],
        ceil["copy_gbps"],
    )


def _run(
    case: LoRACase, device: torch.device, dtype: torch.dtype, ceil: dict, sweep: str, full: bool
) -> dict:
    if device.type != "cuda":
        from loraplane.kernels.dispatch import interpret_on_cpu

        with interpret_on_cpu():
            return run_case(case, device, dtype, ceil, sweep, full)
    return run_case(case, device, dtype, ceil, sweep, full)


if __name__ == "__main__":
    main()
