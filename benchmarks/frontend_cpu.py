"""The worker's front end on the CPU: server CPU per generated token and stream messages/s, no model.

A child process serves the real worker stack (grpc.aio server, `InferenceServicer`, `AsyncLLMEngine`, the
real `LLMEngine` with its scheduler, block manager and output processing, the demo model's tokenizer), but
the model runner is a stub: a step "runs" for `--step-ms` with the GIL released (as a GPU step does) and
samples ordinary English tokens. A burst of requests (ignore_eos, fixed lengths) goes to it over loopback
from this process; the server process's CPU time is read from the OS before and after.

    python -m benchmarks.frontend_cpu --label after                       # this tree
    python -m benchmarks.frontend_cpu --label before --source /tmp/base  # another checkout, same stub

`wall_over_steps` is the burst's wall time over the time its steps alone take (1.0: the front end costs
the engine nothing). `--source` runs the server from another checkout of the repository (e.g. `git archive
<commit> | tar -x -C /tmp/base`), so the same stub measures an older front end. Results are merged by label
into benchmarks/results/frontend_cpu.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

RESULTS = Path(__file__).parent / "results"
TEXT = (
    "The history of the Roman Empire spans many centuries, from the founding of the city to the fall of "
    "Constantinople. Its roads, laws and language shaped the world that followed, and its story is told "
    "again and again in books, films and classrooms around the globe."
)


# ---- the server child ------------------------------------------------------------------------------------
class StubRunner:
    """The model runner's interface (`launch`/`finish`/`release`) without a model: each step sleeps
    `step_s` outside the GIL and samples the next token of an English text for every sequence that
    reaches the end of its known tokens."""

    def __init__(self, step_s: float, token_ids: list[int]) -> None:
        self.step_s, self.token_ids, self.num_steps = step_s, token_ids, 0

    def launch(self, batch, prev=None):
        sample_seqs = [
            seq
            for seq, num_new in zip(batch.seqs, batch.num_new_tokens, strict=False)
            if seq.num_computed_tokens + num_new == len(seq)
        ]
        return SimpleNamespace(batch=batch, sample_seqs=sample_seqs, sample=None, prompt_logprobs=[])

    def finish(self, step):
        from loraplane.inference_worker.layers.sampler import SampleResult

        time.sleep(self.step_s)
        self.num_steps += 1
        ids = self.token_ids
        tokens = [ids[(len(seq) + seq.seq_id) % len(ids)] for seq in step.sample_seqs]
        n = len(tokens)
        return step.sample_seqs, SampleResult(tokens, [None] * n, [None] * n), []

    def release(self, seq) -> None:
        pass


def write_model(root: Path) -> Path:
    """A tiny Llama config (weights: load_format=dummy) with the demo model's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig

    from loraplane.inference_worker.demo import demo_model_path

    shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4)
    LlamaConfig(
        vocab_size=49152, num_key_value_heads=4, max_position_embeddings=2048, **shape
    ).save_pretrained(root)
    AutoTokenizer.from_pretrained(demo_model_path()).save_pretrained(root)
    return root


async def serve(args: argparse.Namespace) -> None:
    import inspect

    import grpc

    from loraplane.grpc_options import server_options
    from loraplane.inference.v1 import inference_pb2_grpc
    from loraplane.inference_worker.async_engine import AsyncLLMEngine
    from loraplane.inference_worker.config import EngineConfig
    from loraplane.inference_worker.service.interceptors import error_interceptor
    from loraplane.inference_worker.service.served_models import ServedModels
    from loraplane.inference_worker.service.servicer import InferenceServicer

    model = write_model(Path(tempfile.mkdtemp(prefix="frontend-cpu-")))
    config = EngineConfig.from_kwargs(
        model=str(model),
        load_format="dummy",
        device="cpu",
        dtype="float32",
        max_num_seqs=args.requests,
        max_model_len=args.prompt_len + args.output_len + 8,
        num_kv_blocks=args.requests * ((args.prompt_len + args.output_len) // 16 + 2),
    )
    engine = AsyncLLMEngine(config)
    await engine.start()  # builds its LLMEngine as it would in a worker; no request has run yet
    runner = StubRunner(args.step_ms / 1000, engine.tokenizer.encode(TEXT, add_special_tokens=False))
    engine.engine.runner = runner
    servicer = InferenceServicer(max_in_flight=args.requests)
    servicer.attach(engine, ServedModels(engine, engine.model_name, str(model), enable_lora=False))
    server = grpc.aio.server(interceptors=[error_interceptor()], options=server_options())
    inference_pb2_grpc.add_InferenceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(json.dumps({"port": port}), flush=True)
    await stop.wait()
    print(json.dumps({"steps": runner.num_steps, "engine": inspect.getfile(AsyncLLMEngine)}), flush=True)
    await server.stop(0)
    await engine.shutdown()


# ---- the client (this process) -----------------------------------------------------------------------
async def burst(port: int, args: argparse.Namespace) -> dict:
    import grpc

    from loraplane.grpc_options import client_options
    from loraplane.inference.v1 import inference_pb2 as pb
    from loraplane.inference.v1 import inference_pb2_grpc

    rng = random.Random(0)
    params = pb.SamplingParams(max_tokens=args.output_len, temperature=0.0, ignore_eos=True)
    counts = {"messages": 0, "tokens": 0}

    async def one(stub, i: int, params: pb.SamplingParams = params) -> None:
        ids = [rng.randrange(100, 40000) for _ in range(args.prompt_len)]
        request = pb.GenerateRequest(
            request_id=f"r{i}", token_ids=pb.TokenIds(ids=ids), sampling_params=params
        )
        async for response in stub.Generate(request):
            counts["messages"] += 1
            counts["tokens"] += len(response.chunk.token_ids)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=client_options()) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        await one(stub, -1, pb.SamplingParams(max_tokens=2, ignore_eos=True))  # warm-up: 2 steps
        counts.update(messages=0, tokens=0)
        start = time.perf_counter()
        await asyncio.gather(*(one(stub, i) for i in range(args.requests)))
        counts["wall_s"] = time.perf_counter() - start
    return counts


def run_scenario(args: argparse.Namespace, step_ms: float) -> dict:
    import psutil

    # -P: neither this folder (benchmarks/kernels.py would shadow kernels) nor the cwd goes on sys.path.
    env = (
        dict(os.environ, PYTHONPATH=str(Path(args.source).resolve() / ".frontend_cpu_path"))
        if args.source
        else None
    )
    command = [sys.executable, "-P", __file__, "--serve", "--step-ms", str(step_ms)]
    command += ["--requests", str(args.requests), "--prompt-len", str(args.prompt_len)]
    command += ["--output-len", str(args.output_len)]
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(child.stdout.readline())["port"]
        process = psutil.Process(child.pid)
        before = process.cpu_times()
        counts = asyncio.run(burst(port, args))
        after = process.cpu_times()
        child.send_signal(signal.SIGTERM)
        served = json.loads(child.stdout.readline())
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    cpu_s = (after.user - before.user) + (after.system - before.system)
    tokens = counts["tokens"]
    return {
        "step_ms": step_ms,
        "requests": args.requests,
        "output_tokens": tokens,
        "stream_messages": counts["messages"],
        "tokens_per_message": round(tokens / counts["messages"], 2),
        "output_tok_per_s": round(tokens / counts["wall_s"], 1),
        "messages_per_s": round(counts["messages"] / counts["wall_s"], 1),
        "server_cpu_us_per_token": round(cpu_s / tokens * 1e6, 1),
        "server_cpu_cores": round(cpu_s / counts["wall_s"], 2),
        "engine_steps": served["steps"],
        "wall_over_steps": round(counts["wall_s"] / (served["steps"] * step_ms / 1000), 2)
        if step_ms
        else None,
        "engine_module": served["engine"],
        "wall_s": round(counts["wall_s"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--label", default="after", help="key of this run in the JSON (e.g. before/after)")
    parser.add_argument("--source", help="serve from this checkout instead of the installed loraplane")
    parser.add_argument("--requests", type=int, default=128, help="requests in the burst")
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--step-ms", type=float, nargs="+", default=[0.0, 10.0], help="stub step time(s)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per step time (the median is kept)")
    parser.add_argument("--out", type=Path, default=RESULTS / "frontend_cpu.json")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(SimpleNamespace(**{**vars(args), "step_ms": args.step_ms[0]})))
        return
    if args.source:
        link_source(Path(args.source))
    rows = [median_row([run_scenario(args, step_ms) for _ in range(args.repeat)]) for step_ms in args.step_ms]
    for row in rows:
        print(json.dumps(row))
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[args.label] = {
        "rows": rows,
        "source": str(args.source or "this tree"),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")


def median_row(runs: list[dict]) -> dict:
    """Each number's median over the runs (a shared, busy machine), with every run's numbers kept."""
    row = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            row[key] = float(np.median([run[key] for run in runs]))
    row["runs"] = runs
    return row


def link_source(source: Path) -> None:
    """A `loraplane` package assembled from `source` (its component folders mapped as pyproject maps them),
    first on PYTHONPATH for the server child."""
    root = source.resolve() / ".frontend_cpu_path" / "loraplane"
    if root.exists():
        return
    root.mkdir(parents=True)
    for entry in (source / "loraplane").iterdir():
        (root / entry.name).symlink_to(entry.resolve())
    for component in ("control_plane", "gateway", "inference_worker", "kernels"):
        (root / component).symlink_to((source / component).resolve())


if __name__ == "__main__":
    main()
