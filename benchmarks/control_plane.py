"""Control-plane convergence benchmark: how fast N workers hold an adapter after CreateAdapter.

Runs a real control plane (grpc.aio on loopback, SQLite with synchronous=FULL in a temp folder) and N
fake workers speaking the real WorkerControl stream (tests/control_plane/fake_worker.py; they load
nothing, so adapter load time is excluded). For each round it times, from the CreateAdapter call:
the moment the last worker holds the new adapter (convergence), the CreateAdapter answer (which waits
for every worker's ack and the residency writes), and the same for DeleteAdapter -> UnloadAdapter.
Everything shares one event loop and process, so the numbers include both sides' Python overhead.

    python benchmarks/control_plane.py [--workers 8] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
# This file's name would shadow the control_plane package when run as a script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT / "tests" / "control_plane"))

from adapter_files import write_adapter  # noqa: E402
from fake_worker import FakeWorker  # noqa: E402

from loraplane.control_plane.config import ControlPlaneConfig  # noqa: E402
from loraplane.control_plane.server import ControlPlaneServer  # noqa: E402
from loraplane.registry.v1 import registry_pb2 as reg  # noqa: E402
from loraplane.registry.v1 import registry_pb2_grpc  # noqa: E402

TARGET_MS = 200.0


async def _timed_round(stub, workers, name: str, path: Path) -> dict[str, float]:
    start = time.perf_counter()
    loaded = [asyncio.create_task(w.wait_until(lambda w: name in w.adapters, timeout=30)) for w in workers]
    adapter = reg.Adapter(name=name, source=reg.AdapterSource(path=str(path)), base_model_name="bench")
    response = await stub.CreateAdapter(reg.CreateAdapterRequest(adapter=adapter))
    create_ms = (time.perf_counter() - start) * 1000
    await asyncio.gather(*loaded)
    converge_ms = (time.perf_counter() - start) * 1000
    assert len(response.loaded_workers) == len(workers), response.message
    start = time.perf_counter()
    unloaded = [
        asyncio.create_task(w.wait_until(lambda w: name not in w.adapters, timeout=30)) for w in workers
    ]
    await stub.DeleteAdapter(reg.DeleteAdapterRequest(name=name))
    delete_ms = (time.perf_counter() - start) * 1000
    await asyncio.gather(*unloaded)
    unload_ms = (time.perf_counter() - start) * 1000
    return {
        "converge_ms": converge_ms,
        "create_rpc_ms": create_ms,
        "delete_rpc_ms": delete_ms,
        "unload_ms": unload_ms,
    }


async def run(num_workers: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "adapters"
        config = ControlPlaneConfig(listen="127.0.0.1:0", data_dir=Path(tmp) / "data", adapter_roots=(root,))
        server = ControlPlaneServer(config)
        await server.start()
        target = f"127.0.0.1:{server.port}"
        workers = [FakeWorker(target, f"w{i}", "bench") for i in range(num_workers)]
        for worker in workers:
            await worker.start()
        for worker in workers:
            await worker.wait_until(lambda w: w.connected.is_set())
        samples = []
        async with grpc.aio.insecure_channel(target) as channel:
            stub = registry_pb2_grpc.AdapterRegistryStub(channel)
            for i in range(rounds + 2):
                path = write_adapter(root / f"a{i}", seed=i)
                sample = await _timed_round(stub, workers, f"bench-{i}", path)
                if i >= 2:  # the first rounds warm up channels and SQLite
                    samples.append(sample)
        for worker in workers:
            await worker.stop()
        await server.stop()
    return _summary(samples, num_workers, rounds)


def _summary(samples: list[dict[str, float]], num_workers: int, rounds: int) -> dict:
    metrics = {}
    for key in samples[0]:
        values = sorted(s[key] for s in samples)
        metrics[key] = {
            "p50": statistics.median(values),
            "p95": values[min(len(values) - 1, int(0.95 * len(values)))],
            "max": values[-1],
        }
    return {
        "benchmark": "control_plane_convergence",
        "workers": num_workers,
        "rounds": rounds,
        "target_ms": TARGET_MS,
        "meets_target_p95": metrics["converge_ms"]["p95"] <= TARGET_MS,
        "metrics": metrics,
        "hardware": {
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "processor": platform.processor(),
        },
        "versions": {"python": platform.python_version(), "grpcio": grpc.__version__},
    }


def print_table(result: dict) -> None:
    print(f"{result['workers']} workers, {result['rounds']} rounds (target: converge <= {TARGET_MS:g} ms)")
    print(f"{'metric':<16}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    for key, values in result["metrics"].items():
        print(f"{key:<16}{values['p50']:>10.1f}{values['p95']:>10.1f}{values['max']:>10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "control_plane.json"))
    args = parser.parse_args()
    result = asyncio.run(run(args.workers, args.rounds))
    print_table(result)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
