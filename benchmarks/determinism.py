"""Deterministic outputs: identical runs, and batch invariance, with mixed adapters (Llama-2-7B shape, dummy).

Two checks per mode (the default kernels, then `batch_invariant=True`), on one engine per mode with
prefix caching off (so both runs see the same batches) and greedy decoding with ignore_eos:
- runs: the same `--requests` requests (base model and `--num-adapters` adapters on all seven
  projections, mixed) generated twice; how many requests' tokens differ between the runs (must be 0).
- alone vs batch: `--probes` requests each generated alone and inside a batch of 64 others; how many
  differ in tokens (must be 0 with batch_invariant) and in cumulative logprob (bit-exact).
Each mode's output tok/s over the first run gives the cost of batch invariance.

    python -m benchmarks.determinism            # the H200 run (writes $OUT/determinism_h200.json when
                                                # $OUT is set, else benchmarks/results/determinism_h200.json)
    python -m benchmarks.determinism --smoke    # tiny shapes on the CPU (fp32), to check the script
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import environment, format_table
from benchmarks.lora import (
    SMOKE,
    _add_adapters,
    _free,
    _git_commit,
    _sync,
    prompts,
    write_adapters,
    write_model_dir,
)
from loraplane.inference_worker import LLM, SamplingParams
from loraplane.inference_worker.testing import LLAMA2_7B

# `python -m benchmarks.determinism` puts the repository root first on sys.path, where the bare `kernels`
# folder would shadow Hugging Face's (transformers imports it): move it behind site-packages.
_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT] + [str(_ROOT)]
logger = logging.getLogger("bench_determinism")
OTHERS = 64  # the batch a probe request shares in the alone-vs-batch check


def generate(llm: LLM, ids: list, loras: list, params: SamplingParams) -> tuple[list, float]:
    """(token ids, cumulative logprob) per request, and the output tok/s of the call."""
    _sync()
    start = time.perf_counter()
    outputs = llm.generate(ids, params, lora_request=loras)
    _sync()
    seconds = time.perf_counter() - start
    results = [(o.outputs[0].token_ids, o.outputs[0].cumulative_logprob) for o in outputs]
    return results, sum(len(r[0]) for r in results) / seconds


def mixed(adapters: list, count: int) -> list:
    """Every third request on the base model, the others spread over the adapters."""
    return [None if i % 3 == 0 else adapters[i % len(adapters)] for i in range(count)]


def check_mode(model_dir: Path, adapter_paths: list[Path], args, invariant: bool) -> dict:
    llm = LLM(
        str(model_dir),
        load_format="dummy",
        dtype=args.dtype,
        device=args.device,
        max_num_seqs=max(args.requests, OTHERS + 1),
        max_model_len=args.input_len + args.output_len + 16,
        gpu_memory_utilization=args.gpu_memory_utilization,
        enable_prefix_caching=False,
        enable_lora=True,
        max_loras=len(adapter_paths),
        max_cpu_loras=len(adapter_paths),
        max_lora_rank=args.rank,
        batch_invariant=invariant,
    )
    adapters = _add_adapters(llm, adapter_paths, "all7")
    vocab = llm.engine.hf_config.vocab_size
    ids, loras = prompts(args.requests, args.input_len, vocab, seed=1), mixed(adapters, args.requests)
    params = SamplingParams(temperature=0.0, max_tokens=args.output_len, ignore_eos=True, logprobs=0)
    generate(llm, prompts(args.requests, args.input_len, vocab, seed=2), loras, params)  # warm-up
    first, tok_per_s = generate(llm, ids, loras, params)
    second, _ = generate(llm, ids, loras, params)
    runs_differ = sum(a[0] != b[0] for a, b in zip(first, second, strict=True))
    batch_ids, batch_loras = prompts(OTHERS + 1, args.input_len, vocab, seed=3), mixed(adapters, OTHERS + 1)
    batch, _ = generate(llm, batch_ids, batch_loras, params)
    tokens_differ = logprobs_differ = 0
    for i in range(args.probes):
        (alone,), _ = generate(llm, [batch_ids[i]], [batch_loras[i]], params)
        tokens_differ += alone[0] != batch[i][0]
        logprobs_differ += alone[1] != batch[i][1]
    del llm
    _free()
    return {
        "mode": "batch_invariant" if invariant else "default",
        "requests": args.requests,
        "runs_differ": runs_differ,
        "probes": args.probes,
        "alone_vs_batch_tokens_differ": tokens_differ,
        "alone_vs_batch_logprobs_differ": logprobs_differ,
        "tok_per_s": tok_per_s,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--num-adapters", type=int, default=32)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--probes", type=int, default=8, help="requests checked alone vs in the batch")
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.6)
    parser.add_argument("--modes", nargs="+", default=["default", "batch_invariant"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.device = "cpu" if args.smoke else "cuda"
    args.dtype = "float32" if args.smoke else "bfloat16"
    if args.smoke:
        args.requests, args.num_adapters, args.input_len, args.output_len = 16, 2, 8, 8
        args.probes = min(args.probes, 3)
    name = "determinism_cpu_smoke.json" if args.smoke else "determinism_h200.json"
    folder = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path(__file__).parent / "results"
    args.out = args.out or folder / name
    return args


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    shape = SMOKE if args.smoke else LLAMA2_7B
    device = torch.device(args.device)
    header = {
        "benchmark": "determinism",
        "shape": "smoke" if args.smoke else "llama-2-7b",
        "input_len": args.input_len,
        "output_len": args.output_len,
        "num_adapters": args.num_adapters,
        "rank": args.rank,
        "environment": environment(device),
        "commit": _git_commit(),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = write_model_dir(root, shape)
        adapter_paths = write_adapters(root, shape, "all7", args.num_adapters, args.rank)
        for mode in args.modes:
            rows.append(check_mode(model_dir, adapter_paths, args, invariant=mode == "batch_invariant"))
            logger.info("%s", rows[-1])
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({**header, "rows": rows}, indent=2, default=str))
    if len(rows) == 2:
        rows[1]["cost_vs_default"] = rows[1]["tok_per_s"] / rows[0]["tok_per_s"]
        args.out.write_text(json.dumps({**header, "rows": rows}, indent=2, default=str))
    columns = ["mode", "requests", "runs_differ", "probes", "alone_vs_batch_tokens_differ"]
    print(format_table(rows, [*columns, "alone_vs_batch_logprobs_differ", "tok_per_s"]))
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
