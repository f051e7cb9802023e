"""Where a decode step's time goes: host phases and GPU kernels, with and without multi-LoRA.

    python -m benchmarks.profile_decode --batch 32 --adapters 32      # on a GPU (Llama-2-7B shape)
    python -m benchmarks.profile_decode --smoke                       # tiny shapes on the CPU

The engine serves `batch` requests (128 tokens in, ignore_eos); once every request is decoding, a few
steps run under the torch profiler. It prints the host time of each engine phase per step, the GPU
kernel time per step, and the kernels that take the most GPU time; the JSON keeps all of it.
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import environment, format_table
from benchmarks.lora import SMOKE, TARGETS, prompts, write_adapters, write_model_dir
from loraplane.inference_worker import LLM, SamplingParams
from loraplane.inference_worker.lora import LoRARequest
from loraplane.inference_worker.testing import LLAMA2_7B


class PhaseTimer:
    """Wraps bound methods so each call's wall time is summed under a phase name."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)

    def wrap(self, owner, name: str, label: str) -> None:
        inner = getattr(owner, name)

        @functools.wraps(inner)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.totals[label] += time.perf_counter() - start

        setattr(owner, name, timed)


def profile_engine(llm: LLM, batch: int, loras: list | None, steps: int, input_len: int) -> dict:
    engine, runner = llm.engine, llm.engine.runner
    ids = prompts(batch, input_len, engine.hf_config.vocab_size, seed=batch)
    params = SamplingParams(temperature=0.0, max_tokens=steps + 40, ignore_eos=True, detokenize=False)
    for i, prompt in enumerate(ids):
        lora = None if loras is None else loras[i % len(loras)]
        engine.add_request(f"p{batch}-{i}", prompt, params, lora_request=lora)
    while engine.scheduler.waiting or any(
        s.num_computed_tokens < len(s) - 1 for s in engine.scheduler.running
    ):
        engine.step()
    for _ in range(10):  # warm decode steps
        engine.step()
    timer = PhaseTimer()
    timer.wrap(engine.scheduler, "schedule", "schedule")
    timer.wrap(runner, "_prepare", "prepare inputs")
    timer.wrap(runner, "_lora_meta", "lora metadata")
    if runner.graphs is not None:
        timer.wrap(runner.graphs, "run", "graph replay (launch)")
    timer.wrap(runner.model, "compute_logits", "logits (launch)")
    timer.wrap(runner.sampler, "forward", "sample (incl. sync)")
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    sync()
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            engine.step()
        sync()
        wall = time.perf_counter() - start
    for rid in list(engine.requests):
        engine.abort(rid)
    kernels = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    kernels.sort(key=lambda e: e.self_device_time_total, reverse=True)
    gpu_us = sum(e.self_device_time_total for e in kernels)
    return {
        "batch": batch,
        "adapters": 0 if loras is None else min(len(loras), batch),
        "steps": steps,
        "ms_per_step": 1000 * wall / steps,
        "gpu_ms_per_step": gpu_us / 1000 / steps,
        "host_ms_per_step": {k: 1000 * v / steps for k, v in sorted(timer.totals.items())},
        "top_kernels": [
            {
                "kernel": e.key[:90],
                "calls_per_step": e.count / steps,
                "us_per_step": e.self_device_time_total / steps,
            }
            for e in kernels[:18]
        ],
    }


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", default=[32])
    p.add_argument("--adapters", type=int, default=32, help="distinct rank-16 adapters (0: no LoRA run)")
    p.add_argument("--target", choices=sorted(TARGETS), default="qkvo")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--smoke", action="store_true", help="tiny model on the CPU")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    shape = SMOKE if args.smoke else LLAMA2_7B
    device = "cpu" if args.smoke else "cuda"
    dtype = "float32" if args.smoke else "bfloat16"
    root = Path(tempfile.mkdtemp(prefix="profile-decode-"))
    model_dir = write_model_dir(root, shape)
    common = dict(
        load_format="dummy",
        dtype=dtype,
        device=device,
        max_num_seqs=max(args.batch),
        max_model_len=args.input_len + args.steps + 64,
        enable_prefix_caching=False,
    )
    results = []
    llm = LLM(str(model_dir), **common)
    results += [profile_engine(llm, b, None, args.steps, args.input_len) for b in args.batch]
    del llm
    if args.adapters:
        paths = write_adapters(root, shape, args.target, args.adapters, rank=16)
        llm = LLM(
            str(model_dir),
            **common,
            enable_lora=True,
            max_loras=args.adapters,
            max_cpu_loras=args.adapters,
            max_lora_rank=16,
            lora_target_modules=tuple(TARGETS[args.target]),
        )
        loras = [LoRARequest(p.name, i + 1, str(p)) for i, p in enumerate(paths)]
        for future in [llm.engine.lora_manager.add(r) for r in loras]:
            future.result()
        results += [profile_engine(llm, b, loras, args.steps, args.input_len) for b in args.batch]
    report = {
        "benchmark": "profile_decode",
        "environment": environment(torch.device(device)),
        "runs": results,
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    for run in results:
        print(
            f"\n== batch {run['batch']}, {run['adapters']} adapters: {run['ms_per_step']:.3f} ms/step wall, "
            f"{run['gpu_ms_per_step']:.3f} ms/step GPU kernels"
        )
        print(
            format_table(
                [{"phase": k, "ms_per_step": f"{v:.3f}"} for k, v in run["host_ms_per_step"].items()],
                ["phase", "ms_per_step"],
            )
        )
        print(format_table(run["top_kernels"], ["kernel", "calls_per_step", "us_per_step"]))


if __name__ == "__main__":
    main()
