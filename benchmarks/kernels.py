"""Benchmark the multi-LoRA and paged-attention kernels against ceilings, naive LoRA and the base GEMM.

Run from the repository root: ``python -m benchmarks.kernels`` on a GPU (bf16), or
``python -m benchmarks.kernels --smoke`` on the CPU (tiny shapes, reference ops; checks the script).
Times are medians of CUDA-graph replays with the L2 cache cleared before each (cold weights).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks.common import (
    bench_sequence_us,
    bench_us,
    environment,
    format_table,
    measure_ceilings,
    read_us,
)
from benchmarks.kernels_attention import attention_rows, decode_row
from loraplane.kernels import triton_lora_decode, triton_lora_expand, triton_lora_fused, triton_lora_shrink
from loraplane.kernels.lora_meta import LoRAKernelMeta
from loraplane.kernels.lora_ops import add_lora, lora_expand, lora_shrink
from loraplane.kernels.testing import POPULARITIES, make_lora_weights, make_token_slots

log = logging.getLogger("benchmarks.kernels")
SEQUENCE_LAYERS = 8  # layers' worth of distinct weights captured back to back for the *_seq_us columns


@dataclass(frozen=True)
class LoRACase:
    name: str
    num_tokens: int
    num_loras: int
    popularity: str
    rank: int
    in_features: int
    widths: tuple[int, ...]
    peer_us: float | None = None  # vLLM shrink+expand on an H200 (issue 3), for side-by-side rows
    peer_base_us: float | None = None


HEADLINE = [
    LoRACase("decode64 distinct r16 4096>4096", 64, 64, "distinct", 16, 4096, (4096,), 44.8, 18.2),
    LoRACase("decode64 r16 qkv 3x4096", 64, 64, "distinct", 16, 4096, (4096,) * 3, 329.0, 38.1),
    LoRACase("decode256 distinct r16 4096>4096", 256, 256, "distinct", 16, 4096, (4096,), 135.5, 24.3),
    LoRACase("decode32 r64 4096>11008", 32, 32, "distinct", 64, 4096, (11008,), 73.4, 35.0),
    LoRACase("prefill4096 8 adapters r16", 4096, 8, "uniform", 16, 4096, (4096,), 67.5, 192.2),
]
LAYERS = {
    "llama2-7b": {
        "qkv": (4096, (4096, 4096, 4096)),
        "o": (4096, (4096,)),
        "gate_up": (4096, (11008, 11008)),
        "down": (11008, (4096,)),
    },
    "llama3-8b": {
        "qkv": (4096, (4096, 1024, 1024)),
        "o": (4096, (4096,)),
        "gate_up": (4096, (14336, 14336)),
        "down": (14336, (4096,)),
    },
}


def sweep_cases(smoke: bool) -> list[LoRACase]:
    """Model layers x ranks x token counts (uniform over min(T, 64) adapters), then popularity mixes."""
    if smoke:
        return [LoRACase(f"smoke {p}", 8, 8, p, 8, 64, (64, 32)) for p in POPULARITIES]
    cases = [
        LoRACase(f"{model} {layer} r{rank} T{tokens}", tokens, min(tokens, 64), "uniform", rank, in_f, widths)
        for model, layers in LAYERS.items()
        for layer, (in_f, widths) in layers.items()
        for rank in (8, 16, 64)
        for tokens in (1, 16, 64, 256, 4096)
    ]
    for tokens in (256, 4096):
        cases += [
            LoRACase(
                f"llama3-8b qkv r16 T{tokens} {p}",
                tokens,
                256 if p == "distinct" else 32,
                p,
                16,
                4096,
                (4096, 1024, 1024),
            )
            for p in POPULARITIES
            if p != "distinct" or tokens <= 256
        ]
    return cases


class LoRASetup:
    """Weights, inputs and metadata of one case, with the three timed variants."""

    def __init__(self, case: LoRACase, device: torch.device, dtype: torch.dtype) -> None:
        self.case = case
        slots = make_token_slots(case.popularity, case.num_tokens, case.num_loras)
        self.meta = LoRAKernelMeta(case.num_tokens, case.num_loras, device)
        self.meta.prepare(slots, torch.full((case.num_loras,), case.rank, dtype=torch.int32))
        self.lora_a, self.lora_b = make_lora_weights(
            case.num_loras, case.rank, case.in_features, case.widths, dtype, device
        )
        self.x = torch.randn(case.num_tokens, case.in_features, device=device, dtype=dtype)
        self.out = torch.zeros(case.num_tokens, sum(case.widths), device=device, dtype=dtype)
        self.buffer = torch.zeros(len(case.widths), case.num_tokens, case.rank, device=device)
        self.weight = torch.randn(sum(case.widths), case.in_features, device=device, dtype=dtype)
        index = self.meta.token_indices_sorted.long()
        self.groups = [(s, index[start : start + n]) for s, start, n in self.meta.segments()]
        self.lora_tokens = int((slots >= 0).sum())
        self.offsets = [sum(case.widths[:i]) for i in range(len(case.widths))]

    def lora(self) -> None:
        add_lora(self.out, self.x, self.lora_a, self.lora_b, self.meta, buffer=self.buffer)

    def split(self) -> None:
        """The two-kernel path (shrink into the fp32 buffer, then expand) whatever the token count."""
        lora_shrink(self.x, self.lora_a, self.buffer, self.meta)
        lora_expand(self.buffer, self.lora_b, self.out, self.meta)

    def fused(self, config: triton_lora_fused.FusedConfig | None = None) -> None:
        triton_lora_fused.fused_add_lora(
            self.out, self.x, self.lora_a, self.lora_b, self.meta, self.offsets, config
        )

    def decode(self, config: triton_lora_decode.DecodeConfig | None = None) -> None:
        """The tiled decode kernels (split-K shrink into fp32 partials, then the expand)."""
        triton_lora_decode.decode_add_lora(
            self.out, self.x, self.lora_a, self.lora_b, self.meta, self.offsets, config
        )

    def naive(self) -> None:
        """The same work as a loop of torch matmuls per adapter and slice."""
        offset = 0
        for a, b in zip(self.lora_a, self.lora_b, strict=True):
            cols = self.out[:, offset : offset + b.shape[1]]
            for slot, tokens in self.groups:
                cols.index_add_(0, tokens, (self.x[tokens] @ a[slot].t()) @ b[slot].t())
            offset += b.shape[1]

    def base(self) -> None:
        torch.matmul(self.x, self.weight.t(), out=self.out)

    def work(self, element_size: int) -> tuple[int, int, int]:
        """(adapter bytes, all bytes moved, flops) of the LoRA delta."""
        case = self.case
        per_adapter = case.rank * (case.in_features * len(case.widths) + sum(case.widths)) * element_size
        adapter = len(self.groups) * per_adapter
        io = self.lora_tokens * (case.in_features + 2 * sum(case.widths)) * element_size
        flops = 2 * self.lora_tokens * case.rank * (case.in_features * len(case.widths) + sum(case.widths))
        return adapter, adapter + io, flops


def context_columns(setup: LoRASetup, device: torch.device, dtype: torch.dtype, ceil: dict) -> dict:
    """What this timing allows and the op among others (GPU only).

    ``read_adapter_bytes_us``: a plain read of the adapter bytes, timed like the op. ``*_seq_us``: the
    op and the base GEMM per call with ``SEQUENCE_LAYERS`` layers' worth of distinct weights captured
    back to back in one graph, as in a forward.
    """
    case = setup.case
    adapter, _, _ = setup.work(setup.x.element_size())
    row = {"read_adapter_bytes_us": read_us(adapter, device)}
    layers = [setup] + [LoRASetup(case, device, dtype) for _ in range(SEQUENCE_LAYERS - 1)]
    row["lora_seq_us"] = bench_sequence_us([s.lora for s in layers], device)
    row["base_seq_us"] = bench_sequence_us([s.base for s in layers], device)
    row["lora_over_base_seq"] = row["lora_seq_us"] / row["base_seq_us"]
    row["pct_hbm_adapter_seq"] = 100 * adapter / row["lora_seq_us"] / 1e3 / ceil["copy_gbps"]
    return row


def run_lora(case: LoRACase, device: torch.device, dtype: torch.dtype, ceil: dict[str, float]) -> dict:
    setup = LoRASetup(case, device, dtype)
    row: dict[str, object] = {"case": case.name, **asdict(case)}
    row["lora_us"] = bench_us(setup.lora, device)
    row["naive_us"] = bench_us(setup.naive, device)
    row["base_us"] = bench_us(setup.base, device)
    adapter, moved, flops = setup.work(setup.x.element_size())
    row["adapter_gbps"] = adapter / row["lora_us"] / 1e3
    row["gbps"] = moved / row["lora_us"] / 1e3
    row["tflops"] = flops / row["lora_us"] / 1e6
    row["floor_us"] = max(moved / ceil["copy_gbps"] / 1e3, flops / ceil["bf16_tflops"] / 1e6)
    row["pct_hbm_adapter"] = 100 * row["adapter_gbps"] / ceil["copy_gbps"]
    row["lora_over_base"] = row["lora_us"] / row["base_us"]
    if device.type == "cuda":
        row.update(context_columns(setup, device, dtype, ceil))
        row["split_us"] = bench_us(setup.split, device)
        if case.num_tokens <= triton_lora_fused.TUNED_MAX_TOKENS:
            row["fused_us"] = bench_us(setup.fused, device)
        if case.num_tokens <= setup.meta.max_tiled_tokens:
            row["decode_us"] = bench_us(setup.decode, device)
    return row


def run_fused_configs(case: LoRACase, device: torch.device, dtype: torch.dtype) -> list[dict]:
    """The fused kernel alone under each column split (for choosing ``fused_config``)."""
    setup = LoRASetup(case, device, dtype)
    shape = (case.num_tokens, len(case.widths), case.rank, case.in_features, max(case.widths), device)
    default = triton_lora_fused.fused_config(*shape)
    candidates = [triton_lora_fused.fused_config(*shape, split_n=n) for n in (1, 2, 4, 8)]
    # Smaller programs, two per SM: 4 warps on half the tile, twice the column split.
    candidates.append(
        triton_lora_fused.fused_config(
            *shape, split_n=2 * default.split_n, tile_elements=default.block_k * case.rank // 2, num_warps=4
        )
    )
    candidates.append(triton_lora_fused.fused_config(*shape, num_warps=8))  # same tiles, fewer warps
    rows = []
    for cfg in candidates:
        us = bench_us(lambda c=cfg: setup.fused(c), device)
        row = {"case": case.name, "op": "fused", "config": str(cfg), "default": cfg == default}
        rows.append({**row, "us": us})
    return rows


SHRINK_CONFIGS = [
    triton_lora_shrink.ShrinkConfig(16, 16, 256, 4),
    triton_lora_shrink.ShrinkConfig(16, 16, 256, 8),
    triton_lora_shrink.ShrinkConfig(16, 16, 128, 16),
    triton_lora_shrink.ShrinkConfig(16, 16, 512, 2, num_warps=8),
    triton_lora_shrink.ShrinkConfig(32, 16, 128, 2),
    triton_lora_shrink.ShrinkConfig(64, 16, 64, 1),
    triton_lora_shrink.ShrinkConfig(64, 16, 128, 4, num_warps=8),
]
EXPAND_CONFIGS = [
    triton_lora_expand.ExpandConfig(16, 64),
    triton_lora_expand.ExpandConfig(16, 128),
    triton_lora_expand.ExpandConfig(16, 256, num_warps=8),
    triton_lora_expand.ExpandConfig(64, 128, num_warps=8),
    triton_lora_expand.ExpandConfig(64, 64),
    triton_lora_expand.ExpandConfig(128, 128, num_warps=8),
]


def run_configs(case: LoRACase, device: torch.device, dtype: torch.dtype) -> list[dict]:
    """Shrink and expand alone under each candidate tiling (for choosing the defaults)."""
    setup = LoRASetup(case, device, dtype)
    rows = []
    for cfg in [None, *SHRINK_CONFIGS]:
        us = bench_us(
            lambda c=cfg: triton_lora_shrink.shrink(
                setup.x, setup.lora_a, setup.buffer, setup.meta, config=c
            ),
            device,
        )
        rows.append({"case": case.name, "op": "shrink", "config": str(cfg or "default"), "us": us})
    for cfg in [None, *EXPAND_CONFIGS]:
        us = bench_us(
            lambda c=cfg: triton_lora_expand.expand(
                setup.buffer, setup.lora_b, setup.out, setup.meta, setup.offsets, config=c
            ),
            device,
        )
        rows.append({"case": case.name, "op": "expand", "config": str(cfg or "default"), "us": us})
    return rows


def smoke_headline() -> list[LoRACase]:
    return [
        LoRACase(
            f"smoke {c.name}",
            min(c.num_tokens, 8),
            min(c.num_loras, 8),
            c.popularity,
            8,
            64,
            tuple(32 for _ in c.widths),
            c.peer_us,
            c.peer_base_us,
        )
        for c in HEADLINE
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/)")
    parser.add_argument("--no-sweep", action="store_true", help="headline rows and attention only")
    parser.add_argument(
        "--rows-only",
        action="store_true",
        help="only the issue's rows: ceilings, the 5 LoRA rows, fused splits, decode attention B64 ctx2048",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    out_path = args.out or Path("benchmarks/results") / (
        "kernels_smoke.json" if args.smoke else "kernels_gpu.json"
    )
    result: dict[str, object] = {"environment": environment(device), "dtype": str(dtype)}
    result["ceilings"] = ceil = measure_ceilings(device)
    log.info("ceilings: %s", ceil)

    def save() -> None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=1))

    headline_cases = smoke_headline() if args.smoke else HEADLINE
    result["headline"] = headline = [run_lora(c, device, dtype, ceil) for c in headline_cases]
    save()
    if args.rows_only:
        attention = [decode_row(64, 2048, device, dtype, ceil)] if not args.smoke else []
        result["attention"] = attention
        if device.type == "cuda":
            decode = [c for c in HEADLINE if c.num_tokens <= triton_lora_fused.TUNED_MAX_TOKENS]
            result["configs"] = [r for c in decode for r in run_fused_configs(c, device, dtype)]
        save()
        print_tables(result, headline, attention)
        return
    result["attention"] = attention = attention_rows(device, dtype, ceil, args.smoke)
    save()
    if device.type == "cuda":
        result["configs"] = [r for c in HEADLINE for r in run_configs(c, device, dtype)]
        save()
    if not args.no_sweep:
        result["sweep"] = sweep = []
        for case in sweep_cases(args.smoke):
            sweep.append(run_lora(case, device, dtype, ceil))
            log.info(
                "%s: lora %.1f us, naive %.1f us, base %.1f us",
                case.name,
                sweep[-1]["lora_us"],
                sweep[-1]["naive_us"],
                sweep[-1]["base_us"],
            )
        save()
    print_tables(result, headline, attention)


def print_tables(result: dict, headline: list[dict], attention: list[dict]) -> None:
    env, ceil = result["environment"], result["ceilings"]
    configs = result.get("configs", [])
    for op in ("shrink", "expand", "fused"):
        for case in dict.fromkeys(r["case"] for r in configs):
            rows = [r for r in configs if r["case"] == case and r["op"] == op]
            if not rows:
                continue
            best = min(rows, key=lambda r: r["us"])
            default = next((r for r in rows if r.get("default") or r["config"] == "default"), rows[0])
            log.info(
                "best %s for %s: %s %.1f us (default %.1f us)",
                op,
                case,
                best["config"],
                best["us"],
                default["us"],
            )
    log.info(
        "\n%s",
        format_table(
            headline,
            [
                "case",
                "lora_us",
                "fused_us",
                "decode_us",
                "split_us",
                "peer_us",
                "base_us",
                "peer_base_us",
                "naive_us",
                "floor_us",
                "lora_over_base",
                "adapter_gbps",
                "pct_hbm_adapter",
                "gbps",
                "tflops",
                "read_adapter_bytes_us",
                "lora_seq_us",
                "base_seq_us",
                "lora_over_base_seq",
                "pct_hbm_adapter_seq",
            ],
        ),
    )
    log.info("\n%s", format_table(attention, ["case", "us", "gbps", "pct_hbm", "tflops"]))
    log.info(
        "card %s, torch %s, triton %s; ceilings %.0f GB/s copy, %.0f TFLOP/s bf16",
        env.get("card"),
        env["torch"],
        env["triton"],
        ceil["copy_gbps"],
        ceil["bf16_tflops"],
    )


if __name__ == "__main__":
    main()
