"""Worker lifecycle: health is NOT_SERVING while the model loads; SIGTERM refuses new calls with
UNAVAILABLE (from the draining servicer, not CANCELLED by a racing grpc shutdown), lets the in-flight
stream finish within the grace period, and exits 0."""

from __future__ import annotations

import asyncio
import socket

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from worker_process import WorkerProcess, collect, engine_flags, generate_request, inference_stub

from loraplane.inference.v1 import inference_pb2 as pb

SERVICE = "loraplane.inference.v1.Inference"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def health_statuses_until_serving(target: str, timeout: float = 180.0) -> list[int]:
    """Poll the health service from the moment the port answers until SERVING; returns what it saw."""
    seen: list[int] = []
    async with grpc.aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        async with asyncio.timeout(timeout):
            while health_pb2.HealthCheckResponse.SERVING not in seen:
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=2)
                    seen.append(reply.status)
                except grpc.aio.AioRpcError:
                    pass  # not listening yet
                await asyncio.sleep(0.05)
    return seen


async def test_health_follows_startup_and_sigterm_drains(tmp_path):
    listen = f"127.0.0.1:{free_port()}"
    worker = WorkerProcess([*engine_flags(), "--shutdown-grace-s", "30"], tmp_path / "worker.log", listen)
    worker.spawn()
    try:
        seen = await health_statuses_until_serving(listen)
        assert (
            seen[0] == health_pb2.HealthCheckResponse.NOT_SERVING
            and seen[-1] == health_pb2.HealthCheckResponse.SERVING
        )
        await worker.start()
        channel, stub = inference_stub(worker.target)
        async with channel:
            call = stub.Generate(
                generate_request("Count slowly:", max_tokens=64, temperature=0, ignore_eos=True)
            )
            first = [await call.read(), await call.read()]
            worker.terminate()
            refused = await refused_error(worker.target)
            result = await collect(call, first)
        # Refused while the stream above still runs: the servicer's own UNAVAILABLE, with its reason.
        assert refused.code() == grpc.StatusCode.UNAVAILABLE, refused
        assert "shutting down" in refused.details()
        assert result["finish"] == {0: pb.FINISH_REASON_LENGTH}
        assert await worker.wait(30) == 0, worker.log()
    finally:
        await worker.stop()


async def refused_error(target: str, timeout: float = 10.0) -> grpc.aio.AioRpcError:
    """Retry a new Generate until the draining worker refuses it; returns the error."""
    async with asyncio.timeout(timeout):
        while True:
            channel, stub = inference_stub(target)
            async with channel:
                try:
                    await collect(stub.Generate(generate_request("Hi", max_tokens=1)))
                except grpc.aio.AioRpcError as exc:
                    return exc
            await asyncio.sleep(0.1)
