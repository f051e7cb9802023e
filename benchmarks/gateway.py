"""The gateway's own cost: added latency and the most requests per second, against an instant worker.

A fake Inference worker (gateway.testing, streams its tokens with no compute) and the gateway run as
separate processes on loopback. Latency: sequential requests, each measured to the last byte, through
the gateway (HTTP/JSON) and straight to the worker (gRPC); the difference of the medians is what the
gateway adds. Throughput: `--concurrency` clients in flight through the gateway for `--seconds`.
The client shares the machine's cores with both servers, so throughput is a floor, not a ceiling.

    python benchmarks/gateway.py [--requests 300] [--seconds 8] [--concurrency 32] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx

from loraplane.grpc_options import client_options
from loraplane.inference.v1 import inference_pb2 as pb
from loraplane.inference.v1 import inference_pb2_grpc
from loraplane.supervisor import free_port, grpc_healthy, http_ok

RESULTS = Path(__file__).resolve().parent / "results" / "gateway.json"


def start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait(check, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.1)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000
    return {
        "p50_ms": pick(0.5),
        "p90_ms": pick(0.9),
        "p99_ms": pick(0.99),
        "mean_ms": statistics.mean(ordered) * 1000,
    }


async def direct_latency(worker: str, n: int, max_tokens: int, stream: bool) -> list[float]:
    async with grpc.aio.insecure_channel(worker, options=client_options()) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        request = pb.GenerateRequest(
            model="fake-base", text="hello world", sampling_params=pb.SamplingParams(max_tokens=max_tokens)
        )
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            async for _ in stub.Generate(request):
                pass
            samples.append(time.perf_counter() - t0)
        return samples


def body(max_tokens: int, stream: bool) -> dict:
    return {"model": "fake-base", "prompt": "hello world", "max_tokens": max_tokens, "stream": stream}


async def gateway_latency(url: str, n: int, max_tokens: int, stream: bool) -> list[float]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            reply = await client.post("/v1/completions", json=body(max_tokens, stream))
            reply.raise_for_status()
            samples.append(time.perf_counter() - t0)
        return samples


async def throughput(url: str, seconds: float, concurrency: int, max_tokens: int) -> dict:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    done, errors = 0, 0
    deadline = time.perf_counter() + seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal done, errors
        while time.perf_counter() < deadline:
            reply = await client.post("/v1/completions", json=body(max_tokens, False))
            done, errors = done + (reply.status_code == 200), errors + (reply.status_code != 200)

    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {"requests_per_s": done / elapsed, "requests": done, "errors": errors, "seconds": elapsed}


async def measure(args, worker: str, url: str) -> dict:
    await gateway_latency(url, 20, args.max_tokens, False)  # warm up connections and code paths
    await direct_latency(worker, 20, args.max_tokens, False)
    direct, via, via_stream = [], [], []
    for _ in range(
        args.requests // 10
    ):  # interleaved rounds, so load from other processes hits all three alike
        direct += await direct_latency(worker, 10, args.max_tokens, False)
        via += await gateway_latency(url, 10, args.max_tokens, False)
        via_stream += await gateway_latency(url, 10, args.max_tokens, True)
    tput = await throughput(url, args.seconds, args.concurrency, args.max_tokens)
    d, g, s = percentiles(direct), percentiles(via), percentiles(via_stream)
    return {
        "direct_grpc": d,
        "gateway": g,
        "gateway_stream": s,
        "added_p50_ms": g["p50_ms"] - d["p50_ms"],
        "added_p50_stream_ms": s["p50_ms"] - d["p50_ms"],
        "throughput": tput,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    worker_port, gateway_port = free_port(), free_port()
    worker = f"127.0.0.1:{worker_port}"
    url = f"http://127.0.0.1:{gateway_port}"
    procs = [start(["-m", "loraplane.gateway.testing", "--port", str(worker_port)])]
    try:
        wait(lambda: grpc_healthy(worker), "the fake worker")
        procs.append(start(["-m", "loraplane", "--log-level", "WARNING", "gateway", "--host", "127.0.0.1",
                            "--port", str(gateway_port), "--worker", worker]))  # fmt: skip
        wait(lambda: http_ok(f"{url}/health"), "the gateway")
        results = asyncio.run(measure(args, worker, url))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
    report = {
        "benchmark": "gateway overhead against an instant fake worker",
        "settings": vars(args) | {"out": str(args.out)},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "versions": {"grpcio": grpc.__version__, "httpx": httpx.__version__},
        **results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'path':<22}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}")
    for name in ("direct_grpc", "gateway", "gateway_stream"):
        row = results[name]
        print(f"{name:<22}{row['p50_ms']:>9.2f}{row['p90_ms']:>9.2f}{row['p99_ms']:>9.2f}")
    print(f"added p50: {results['added_p50_ms']:.2f} ms (stream {results['added_p50_stream_ms']:.2f} ms)")
    tput = results["throughput"]
    print(f"throughput: {tput['requests_per_s']:.0f} requests/s at concurrency {args.concurrency} "
          f"({tput['errors']} errors)")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
