"""CPU multi-LoRA reference (what the CPU engine runs) at the demo model's shapes.

SmolLM2-135M: hidden 576, q/o 576 wide, k/v 192 wide (3 of 9 heads), 30 layers; max_lora_rank 16,
max_loras 4, a rank-8 adapter. Times one layer's ``add_lora`` on the fused qkv projection plus o_proj,
for decode (16 tokens) and prefill (16 x 40 tokens), one adapter or a base/adapter mix.
Run from the repository root: ``python -m benchmarks.kernels_cpu_lora [--threads N]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from benchmarks.common import environment, format_table
from loraplane.kernels.lora_meta import LoRAKernelMeta
from loraplane.kernels.lora_ops import add_lora
from loraplane.kernels.testing import make_lora_weights

log = logging.getLogger("benchmarks.kernels_cpu_lora")
HIDDEN, KV_WIDTH, LAYERS, MAX_RANK, MAX_LORAS = 576, 192, 30, 16, 4
CASES = [("decode T16 one adapter", 16, False), ("prefill T640 one adapter", 640, False)]
CASES.append(("prefill T640 base + 2 adapters", 640, True))


def time_case(num_tokens: int, mixed: bool, dtype: torch.dtype, repeats: int) -> float:
    """Milliseconds of one layer (qkv + o ``add_lora``)."""
    gen = torch.Generator().manual_seed(0)
    qkv = make_lora_weights(MAX_LORAS, MAX_RANK, HIDDEN, (HIDDEN, KV_WIDTH, KV_WIDTH), dtype, seed=1)
    o_proj = make_lora_weights(MAX_LORAS, MAX_RANK, HIDDEN, (HIDDEN,), dtype, seed=2)
    slots = torch.zeros(num_tokens, dtype=torch.int32)
    if mixed:
        slots = torch.randint(-1, 2, (num_tokens,), generator=gen).to(torch.int32)
    meta = LoRAKernelMeta(8192, MAX_LORAS, "cpu")
    meta.prepare(slots, torch.tensor([8, 8, 16, 16], dtype=torch.int32))
    x = torch.randn(num_tokens, HIDDEN, generator=gen).to(dtype)
    out_qkv = torch.zeros(num_tokens, HIDDEN + 2 * KV_WIDTH, dtype=dtype)
    out_o = torch.zeros(num_tokens, HIDDEN, dtype=dtype)

    def layer() -> None:
        add_lora(out_qkv, x, *qkv, meta)
        add_lora(out_o, x, *o_proj, meta)

    layer()
    start = time.perf_counter()
    for _ in range(repeats):
        layer()
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/kernels_cpu_lora.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for name, num_tokens, mixed in CASES:
            ms = time_case(num_tokens, mixed, dtype, repeats=20)
            case = f"{name} {dtype}".replace("torch.", "")
            rows.append({"case": case, "layer_ms": ms, "step_ms": ms * LAYERS})
    env = {**environment(torch.device("cpu")), "threads": torch.get_num_threads()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"environment": env, "rows": rows}, indent=1))
    log.info("\n%s", format_table(rows, ["case", "layer_ms", "step_ms"]))
    log.info("%s threads, torch %s (step = %d layers)", env["threads"], env["torch"], LAYERS)


if __name__ == "__main__":
    main()
