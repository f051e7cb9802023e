"""CPU: bf16 against fp32 weights for the demo model, decode and prefill, to pick the CPU default dtype.

The offline engine with the demo model (SmolLM2-135M-Instruct), the same prompts in both dtypes:
- decode: ms per decode step at batch 1 and 8 (64 new tokens, prompt of 16 tokens);
- prefill: ms for one 512-token prompt (one token out), in chunks of the engine's default prefill cap.
Times are CPU time of this process (`time.process_time`), which other processes' load barely changes;
run with `--threads 1` on a shared machine, where it equals the wall time an idle core would take.
Rounds alternate between the dtypes and the minimum per dtype is kept.

python -P benchmarks/cpu_dtype.py [--threads 2] [--rounds 3] [--out benchmarks/results/cpu_dtype.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
from pathlib import Path

import torch

from loraplane.inference_worker import LLM, SamplingParams

DTYPES = ("bfloat16", "float32")


def decode_ms(llm: LLM, batch: int, new_tokens: int = 64) -> float:
    prompts = [[1000 + 17 * i + j for j in range(16)] for i in range(batch)]
    params = SamplingParams(max_tokens=new_tokens, ignore_eos=True, temperature=0)
    llm.generate(prompts, SamplingParams(max_tokens=1))  # warm-up, then the timed run
    engine = llm.engine
    for i, prompt in enumerate(prompts):
        engine.add_request(f"d{batch}-{i}", prompt, params)
    engine.step()  # the prefill
    start, steps = time.process_time(), 0
    while engine.has_unfinished_requests():
        engine.step()
        steps += 1
    return (time.process_time() - start) / steps * 1e3


def prefill_ms(llm: LLM, num_tokens: int = 512) -> float:
    prompt = [2000 + (7 * j) % 30000 for j in range(num_tokens)]
    start = time.process_time()
    llm.generate([prompt], SamplingParams(max_tokens=1))
    return (time.process_time() - start) * 1e3


def one_round(dtype: str) -> dict:
    llm = LLM(dtype=dtype, device="cpu", max_model_len=1024, max_num_seqs=8, enable_prefix_caching=False)
    row = {
        "decode_b1_ms": decode_ms(llm, 1),
        "decode_b8_ms": decode_ms(llm, 8),
        "prefill_512_ms": prefill_ms(llm),
    }
    del llm
    gc.collect()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds: dict[str, list[dict]] = {d: [] for d in DTYPES}
    for _ in range(args.rounds):
        for dtype in DTYPES:
            rounds[dtype].append(one_round(dtype))
    best = {d: {k: min(r[k] for r in rows) for k in rows[0]} for d, rows in rounds.items()}
    print(f"{'dtype':<10}{'decode b1 ms':>14}{'decode b8 ms':>14}{'prefill 512 ms':>16}")
    for dtype, row in best.items():
        print(
            f"{dtype:<10}{row['decode_b1_ms']:>14.1f}{row['decode_b8_ms']:>14.1f}{row['prefill_512_ms']:>16.0f}"
        )
    doc = {
        "model": "SmolLM2-135M-Instruct",
        "best": best,
        "rounds": rounds,
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "bf16_kernels": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
            "load_avg": os.getloadavg(),
        },
    }
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
