"""CPU: time to first token of a 4-token request that arrives while a 7,000-token prompt prefills.

The offline engine with the demo model on one thread. One pass over the long prompt's prefill: a short
request arrives after its first step ("start") and another once `--late` of the prompt is computed
("end"); each short request's TTFT is the time of the steps from its arrival to its token. The long
prompt's total prefill time (both short requests included) is the cost of the chunking.

python -P benchmarks/cpu_long_prefill_ttft.py [--cap 128] [--context-cost 0] [--out results.json]
(--cap 0: no per-step prefill cap; --context-cost 0: a cap in tokens, not in work; omitted: the
engine's defaults)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time

import torch

from loraplane.inference_worker import EngineConfig, LLMEngine, SamplingParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=int, default=None, help="long_prefill_token_threshold")
    parser.add_argument("--context-cost", type=float, default=None, help="prefill_context_cost override")
    parser.add_argument("--prompt-tokens", type=int, default=7000)
    parser.add_argument("--late", type=float, default=0.95, help="prompt share computed at the 2nd arrival")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    engine = LLMEngine(EngineConfig(long_prefill_token_threshold=args.cap, max_model_len=8192))
    if args.context_cost is not None:
        sched = engine.scheduler
        sched.config = dataclasses.replace(sched.config, prefill_context_cost=args.context_cost)
    one_token = SamplingParams(max_tokens=1)
    engine.add_request("long", [1000 + i % 5000 for i in range(args.prompt_tokens)], one_token)
    long_seq = engine.scheduler.waiting[0]
    arrivals: dict[str, tuple[float, int]] = {}
    ttft: dict[str, float] = {}
    step_s: list[float] = []
    start = time.perf_counter()
    while "long" not in ttft or set(arrivals) - set(ttft):
        late = long_seq.num_computed_tokens >= args.late * len(long_seq) and "long" not in ttft
        if not arrivals or ("end" not in arrivals and late):
            name = "start" if not arrivals else "end"
            engine.add_request(name, [1, 2, 3, 4], one_token)
            arrivals[name] = (time.perf_counter(), long_seq.num_computed_tokens)
        began = time.perf_counter()
        outputs = engine.step()
        step_s.append(time.perf_counter() - began)
        for out in outputs:
            if out.request_id not in ttft:
                ttft[out.request_id] = time.perf_counter() - arrivals.get(out.request_id, (start, 0))[0]
    config = engine.scheduler.config
    result = {
        "cap": config.long_prefill_token_threshold,
        "prefill_context_cost": config.prefill_context_cost,
        "prompt_tokens": args.prompt_tokens,
        "steps": len(step_s),
        "long_prefill_s": round(ttft["long"], 2),
        "short_ttft_start_s": round(ttft["start"], 2),
        "short_ttft_end_s": round(ttft["end"], 2) if "end" in ttft else None,
        "end_arrival_context": arrivals["end"][1] if "end" in arrivals else None,
        "step_s_first": round(step_s[0], 3),
        "step_s_max": round(max(step_s), 3),
        "step_s_last": round(step_s[-1], 3),
        "load_avg_1m_end": round(os.getloadavg()[0], 2),  # other processes on the machine meanwhile
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    columns = ["cap", "prefill_context_cost", "steps", "long_prefill_s"]
    columns += ["short_ttft_start_s", "short_ttft_end_s"]
    print(" ".join(f"{c:>20}" for c in columns))
    print(" ".join(f"{result[c]!s:>20}" for c in columns))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
