"""CPU: time to first token of a 4-token request that arrives while a 7,000-token prompt prefills.

The offline engine with the demo model on one thread: the long prompt runs `--warm-steps` steps first
(1 = the request arrives at the start of the prefill; 52 with a 128-token cap = near its end), then
the short request is added and the engine steps until it has its token.

python -P benchmarks/cpu_long_prefill_ttft.py --cap 128 --warm-steps 52 [--out results.json]
(--cap 0: no per-step prefill cap; omitted: the engine's default)
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from loraplane.inference_worker import EngineConfig, LLMEngine, SamplingParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=int, default=None, help="long_prefill_token_threshold")
    parser.add_argument("--warm-steps", type=int, default=1, help="long-prompt steps before the short one")
    parser.add_argument("--prompt-tokens", type=int, default=7000)
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    engine = LLMEngine(EngineConfig(long_prefill_token_threshold=args.cap, max_model_len=8192))
    one_token = SamplingParams(max_tokens=1)
    engine.add_request("long", [1000 + i % 5000 for i in range(args.prompt_tokens)], one_token)
    start = time.perf_counter()
    for _ in range(args.warm_steps):
        engine.step()
    arrived = time.perf_counter()
    engine.add_request("short", [1, 2, 3, 4], one_token)
    while not any(out.request_id == "short" for out in engine.step()):
        pass
    result = {
        "cap": engine.scheduler.config.long_prefill_token_threshold,
        "prompt_tokens": args.prompt_tokens,
        "warm_steps": args.warm_steps,
        "warm_s": round(arrived - start, 2),
        "short_ttft_s": round(time.perf_counter() - arrived, 2),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    print(f"{'cap':>5} {'warm steps':>10} {'warm s':>8} {'short TTFT s':>13}")
    print(f"{result['cap']:>5} {args.warm_steps:>10} {result['warm_s']:>8} {result['short_ttft_s']:>13}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
