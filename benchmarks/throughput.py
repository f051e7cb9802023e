"""Engine throughput benchmark.

CPU mode: the demo model (SmolLM2-135M) decoding a batch of 8 prompts with loraplane's engine vs HF
transformers `generate` on the same prompts, in the same run, with both systems in bfloat16 and then
both in float32 (`--cpu-dtype` picks one).
GPU mode: Llama-2-7B shape with dummy bf16 weights, 128 prompt tokens and 128 output tokens, at batch
1, 32 and 256: output tokens/s and ms per decode step against the weight-read floor (13.5 GB of
weights read once per step at about 4.3 TB/s on an H200: about 3.1 ms).

    python -m benchmarks.throughput --mode cpu --threads 1 [--cpu-dtype bfloat16 float32]
    python -m benchmarks.throughput --mode gpu --batch-sizes 1 32 256

Run it as a module: as a script, benchmarks/kernels.py would shadow the kernels package.

Prints a table and writes JSON (with hardware and versions) to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
import tempfile
import time
from pathlib import Path

import torch

from loraplane.inference_worker import LLM, SamplingParams
from loraplane.inference_worker.testing import LLAMA2_7B, SMALL_LLAMA, write_random_model

RESULTS = Path(__file__).parent / "results"
LLAMA2_7B_CONFIG = dict(
    architectures=["LlamaForCausalLM"],
    model_type="llama",
    **LLAMA2_7B,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
)
H200_BANDWIDTH = 4.3e12
CPU_PROMPTS = [
    "The history of the Roman Empire",
    "Write a short poem about the sea.",
    "Explain how a transistor works:",
    "def quicksort(items):",
    "The best way to learn a new language is",
    "Here is a recipe for pancakes:",
    "In the year 2050, cities will",
    "Three facts about octopuses:",
]


def environment() -> dict:
    import transformers

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        import triton

        env.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda, triton=triton.__version__)
    return env


def run_engine(llm: LLM, prompts: list, params: SamplingParams) -> dict:
    """Drive the engine step by step, timing pure-decode steps separately (no device syncs in the loop: a
    step returns once its tokens are on the host, while the next step may already run on the GPU)."""
    engine = llm.engine
    for i, prompt in enumerate(prompts):
        engine.add_request(f"bench-{time.monotonic_ns()}-{i}", prompt, params)
    decode_times, num_tokens = [], 0
    start = time.perf_counter()
    while engine.has_unfinished_requests():
        sched = engine.scheduler
        is_decode = not sched.waiting and all(s.num_computed_tokens == len(s) - 1 for s in sched.running)
        t0 = time.perf_counter()
        outs = engine.step(finished_only=True)
        if is_decode:
            decode_times.append(time.perf_counter() - t0)
        num_tokens += sum(len(c.token_ids) for o in outs if o.finished for c in o.outputs)
    elapsed = time.perf_counter() - start
    return {
        "elapsed_s": elapsed,
        "output_tokens": num_tokens,
        "output_tok_per_s": num_tokens / elapsed,
        "decode_steps": len(decode_times),
        "ms_per_decode_step": 1000 * sorted(decode_times)[len(decode_times) // 2] if decode_times else None,
    }


class _StepTimer:
    """A logits processor that only records when HF `generate` calls it: once per generated token, so
    the gaps between calls are its decode steps."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.times.append(time.perf_counter())
        return scores


def run_hf(model, tok, prompts: list[str], output_len: int) -> dict:
    from transformers import LogitsProcessorList

    batch = tok(prompts, return_tensors="pt", padding=True)
    timer = _StepTimer()
    gen = dict(
        max_new_tokens=output_len,
        min_new_tokens=output_len,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
        logits_processor=LogitsProcessorList([timer]),
    )
    with torch.inference_mode():
        start = time.perf_counter()
        out = model.generate(**batch, **gen)
        elapsed = time.perf_counter() - start
    tokens = (out.shape[1] - batch.input_ids.shape[1]) * len(prompts)
    steps = sorted(b - a for a, b in zip(timer.times, timer.times[1:], strict=False))
    return {
        "elapsed_s": elapsed,
        "output_tokens": tokens,
        "output_tok_per_s": tokens / elapsed,
        "decode_steps": len(steps),
        "ms_per_decode_step": 1000 * steps[len(steps) // 2] if steps else None,
    }


def cpu_rounds(args, dtype: str) -> dict:
    """Both systems in `dtype` alternate for `--rounds` rounds (the machine may be shared); the best
    round of each is reported, and every round is kept."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loraplane.inference_worker.demo import demo_model_path

    path = demo_model_path()
    prompts = CPU_PROMPTS[: args.cpu_batch]
    params = SamplingParams(temperature=0.0, max_tokens=args.output_len, ignore_eos=True)
    llm = LLM(path, device="cpu", dtype=dtype, cpu_kv_cache_gb=0.25, max_model_len=1024)
    tok = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
    run_engine(llm, prompts[:2], SamplingParams(temperature=0.0, max_tokens=4))  # warm-ups
    run_hf(model, tok, prompts[:2], 4)
    rounds = {"loraplane": [], "hf_generate": []}
    for _ in range(args.rounds):
        rounds["loraplane"].append(run_engine(llm, prompts, params))
        rounds["hf_generate"].append(run_hf(model, tok, prompts, args.output_len))
    best = {name: max(runs, key=lambda r: r["output_tok_per_s"]) for name, runs in rounds.items()}
    rows = [{"system": name, "dtype": dtype, "batch": len(prompts), **best[name]} for name in rounds]
    speedup = best["loraplane"]["output_tok_per_s"] / best["hf_generate"]["output_tok_per_s"]
    return {"rows": rows, "all_rounds": rounds, "speedup": speedup}


def cpu_mode(args) -> dict:
    """SmolLM2 at `--cpu-batch` against HF `generate`, once per `--cpu-dtype` (each system in that
    dtype; one model pair in memory at a time)."""
    per_dtype = {}
    for dtype in args.cpu_dtype:
        per_dtype[dtype] = cpu_rounds(args, dtype)
        gc.collect()
    return {
        "mode": "cpu",
        "model": "SmolLM2-135M-Instruct",
        "output_len": args.output_len,
        "rows": [row for result in per_dtype.values() for row in result["rows"]],
        "all_rounds": {dtype: result["all_rounds"] for dtype, result in per_dtype.items()},
        "speedup": {dtype: result["speedup"] for dtype, result in per_dtype.items()},
    }


def gpu_mode(args) -> dict:
    model_dir = Path(tempfile.mkdtemp(prefix="llama2-7b-shape-"))
    (model_dir / "config.json").write_text(json.dumps(LLAMA2_7B_CONFIG))
    llm = LLM(
        str(model_dir),
        load_format="dummy",
        dtype="bfloat16",
        device="cuda",
        skip_tokenizer_init=True,
        max_num_seqs=max(args.batch_sizes),
        max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization,
        enable_prefix_caching=False,
    )
    weight_bytes = sum(p.numel() * p.element_size() for p in llm.engine.runner.model.parameters())
    floor_ms = 1000 * weight_bytes / H200_BANDWIDTH
    gen = torch.Generator().manual_seed(0)
    params = SamplingParams(temperature=0.0, max_tokens=args.output_len, ignore_eos=True, detokenize=False)
    rows = []
    for bs in args.batch_sizes:
        prompts = [torch.randint(3, 32000, (args.input_len,), generator=gen).tolist() for _ in range(bs)]
        run_engine(llm, prompts[: min(bs, 4)], SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True))
        result = run_engine(llm, prompts, params)
        step = result["ms_per_decode_step"]
        rows.append(
            {
                "system": "loraplane",
                "batch": bs,
                **result,
                "floor_ms": floor_ms,
                "floor_fraction": floor_ms / step if step else None,
            }
        )
    return {
        "mode": "gpu",
        "model": "Llama-2-7B shape, dummy bf16",
        "weight_bytes": weight_bytes,
        "input_len": args.input_len,
        "output_len": args.output_len,
        "rows": rows,
    }


def smoke_mode(args) -> dict:
    """Cheap CUDA-path check before benchmarking: a tiny random Llama, engine (Triton kernels, CUDA
    graphs) vs HF greedy on the same GPU in fp32, plus a bf16 run."""
    from transformers import LlamaConfig, LlamaForCausalLM

    model_dir = Path(tempfile.mkdtemp(prefix="tiny-llama-"))
    hf = write_random_model(LlamaForCausalLM, LlamaConfig(**SMALL_LLAMA), model_dir, device="cuda")
    gen = torch.Generator().manual_seed(1)
    prompts = [
        torch.randint(3, 1000, (int(n),), generator=gen).tolist()
        for n in torch.randint(1, 80, (24,), generator=gen)
    ]
    params = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
    rows = []
    for dtype in ("float32", "bfloat16"):
        llm = LLM(
            str(model_dir),
            device="cuda",
            dtype=dtype,
            skip_tokenizer_init=True,
            max_num_seqs=32,
            gpu_memory_utilization=0.3,
        )
        outs = llm.generate(prompts, params)
        graphs = llm.engine.runner.graphs
        matches = 0
        for prompt, out in zip(prompts, outs, strict=True):
            ids = torch.tensor([prompt], device="cuda")
            ref = hf.to(getattr(torch, dtype)).generate(
                ids, max_new_tokens=16, min_new_tokens=16, do_sample=False
            )
            matches += out.outputs[0].token_ids == ref[0, len(prompt) :].tolist()
        rows.append(
            {
                "system": f"tiny-llama {dtype}",
                "batch": len(prompts),
                "hf_greedy_matches": matches,
                "cuda_graphs": len(graphs.graphs) if graphs else 0,
            }
        )
        del llm
        torch.cuda.empty_cache()
    return {"mode": "smoke", "rows": rows}


def print_table(result: dict) -> None:
    keys = [
        "system",
        "dtype",
        "batch",
        "output_tok_per_s",
        "ms_per_decode_step",
        "floor_fraction",
        "elapsed_s",
        "hf_greedy_matches",
        "cuda_graphs",
    ]
    keys = [k for k in keys if any(k in r for r in result["rows"])]
    print(" | ".join(f"{k:>18}" for k in keys))
    for row in result["rows"]:
        cells = []
        for k in keys:
            v = row.get(k)
            cells.append(f"{v:>18.2f}" if isinstance(v, float) else f"{v!s:>18}")
        print(" | ".join(cells))
    for dtype, speedup in result.get("speedup", {}).items():
        print(f"loraplane / HF generate ({dtype}): {speedup:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mode", choices=["cpu", "gpu", "smoke"], default="gpu" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--cpu-batch", type=int, default=8)
    parser.add_argument(
        "--cpu-dtype",
        nargs="+",
        choices=["bfloat16", "float32"],
        default=["bfloat16", "float32"],
        help="CPU mode: the dtype(s) to measure, each with both systems in that dtype",
    )
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=None)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--rounds", type=int, default=3, help="CPU mode: alternating rounds per system")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (both systems; CPU mode default 1)"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads is None and args.mode == "cpu":
        args.threads = 1  # both systems single-threaded: the numbers compare the code, not the cores
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.output_len is None:
        args.output_len = 64 if args.mode == "cpu" else 128
    result = {"cpu": cpu_mode, "gpu": gpu_mode, "smoke": smoke_mode}[args.mode](args)
    result["environment"] = environment()
    result["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print_table(result)
    out = args.out or RESULTS / f"throughput_{args.mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
