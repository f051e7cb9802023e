"""A worker whose engine loop dies does not linger as a SERVING zombie: the request in flight gets
UNAVAILABLE, health turns NOT_SERVING, and the process exits with EXIT_ENGINE_DEAD so that a
supervisor restarts it (a real worker child process whose engine step is forced to raise)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from fake_control_plane import FakeControlPlane
from grpc_health.v1 import health_pb2, health_pb2_grpc
from worker_process import WorkerProcess, collect, engine_flags, generate_request, inference_stub

from loraplane.inference_worker.config import EngineConfig
from loraplane.inference_worker.service import server as server_module
from loraplane.inference_worker.service.config import WorkerServiceConfig
from loraplane.inference_worker.service.server import EXIT_ENGINE_DEAD
from tests.inference_worker.service.fake_engine import FakeEngine

CRASHING_WORKER = Path(__file__).with_name("crashing_worker.py")
SERVICE = "loraplane.inference.v1.Inference"
WAIT_S = 30


async def test_a_dead_engine_turns_health_not_serving_and_the_process_exits_non_zero(tmp_path):
    worker = WorkerProcess(engine_flags(), tmp_path / "worker.log")
    worker.args[1:3] = [str(CRASHING_WORKER)]  # instead of `-m loraplane`
    try:
        await worker.start()
        async with grpc.aio.insecure_channel(worker.target) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=SERVICE))
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            channel2, stub = inference_stub(worker.target)
            async with channel2:
                try:
                    await collect(stub.Generate(generate_request("Hello", max_tokens=4)))
                    raise AssertionError("the request succeeded on a broken engine")
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                    assert "forced step failure" not in exc.details()  # internals stay in the log
            reply = await asyncio.wait_for(watch.read(), 10)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await worker.wait(30) == EXIT_ENGINE_DEAD, worker.log()
        assert "forced step failure" in worker.log()
    finally:
        await worker.stop()


async def test_the_control_stream_ends_when_the_engine_dies(monkeypatch):
    """In process (the fake engine's loop 'dies'): the worker ends its control-plane stream, so the
    control plane marks it down, and `serve` returns EXIT_ENGINE_DEAD."""
    engine = FakeEngine()
    monkeypatch.setattr(server_module, "build_engine", lambda config: engine)
    cp = FakeControlPlane()
    await cp.start()
    config = WorkerServiceConfig(
        listen="127.0.0.1:0", control_plane=cp.target, engine=EngineConfig(model="/models/fake")
    )
    ready: asyncio.Future = asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(server_module.serve(config, on_ready=ready.set_result))
    try:
        worker = await asyncio.wait_for(ready, 30)
        await cp.wait_hello()
        engine.running = False  # as AsyncLLMEngine.is_running after its step loop died
        assert await asyncio.wait_for(serving, WAIT_S) == EXIT_ENGINE_DEAD
        assert worker.draining
        async with asyncio.timeout(10):  # the control plane's end of the stream hears of it
            while cp.streams_ended < 1:
                await asyncio.sleep(0.05)
    finally:
        serving.cancel()
        await cp.stop()
