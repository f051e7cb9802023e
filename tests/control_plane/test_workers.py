"""WorkerControl stream: heartbeats, liveness, worker token, health and reflection."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from fake_worker import FakeWorker
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from loraplane.control_plane.server import ControlPlaneServer
from loraplane.registry.v1 import registry_pb2 as reg
from loraplane.worker.v1 import worker_pb2 as wk
from loraplane.worker.v1 import worker_pb2_grpc
from tests.control_plane.conftest import make_config


async def refused(worker: FakeWorker, timeout_s: float = 10.0) -> None:
    """Wait for the worker's stream to fail (a refused stream does not notify `wait_until`)."""
    for _ in range(int(timeout_s / 0.05)):
        if worker.last_error is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"worker {worker.worker_id} was never refused")


async def test_heartbeats_report_load_and_silence_marks_down(registry, workers):
    worker = await workers("w0")
    await worker.wait_until(lambda w: len(w.received) >= 1)
    listed = await registry.ListWorkers(reg.ListWorkersRequest())
    assert listed.workers[0].state == reg.WORKER_STATE_READY
    worker.send_heartbeats = False
    await worker.wait_until(lambda w: w.last_error is not None, timeout=10)
    assert (
        worker.last_error.code() == grpc.StatusCode.UNAVAILABLE
        and "no heartbeat" in worker.last_error.details()
    )
    worker.send_heartbeats = True
    await worker.wait_until(lambda w: w.num_connects >= 2, timeout=10)  # reconnects and resyncs
    assert worker.kinds().count("sync") == 2


async def test_heartbeat_updates_load(registry, workers):
    await workers("w0")
    for _ in range(50):
        listed = await registry.ListWorkers(reg.ListWorkersRequest())
        if listed.workers[0].num_running == 1:
            break
        await asyncio.sleep(0.1)
    assert listed.workers[0].num_running == 1 and listed.workers[0].kv_usage == pytest.approx(0.25)


async def test_closed_stream_marks_worker_down(registry, workers):
    worker = await workers("w0")
    await worker.stop()
    for _ in range(50):
        listed = await registry.ListWorkers(reg.ListWorkersRequest(include_down=True))
        if listed.workers[0].state == reg.WORKER_STATE_DOWN:
            break
        await asyncio.sleep(0.05)
    assert listed.workers[0].state == reg.WORKER_STATE_DOWN
    assert (await registry.ListWorkers(reg.ListWorkersRequest())).workers == []


async def test_first_message_must_be_hello(target):
    async with grpc.aio.insecure_channel(target) as channel:
        call = worker_pb2_grpc.WorkerControlStub(channel).Connect()
        await call.write(wk.ConnectRequest(heartbeat=wk.Heartbeat()))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "Hello" in info.value.details()


async def test_worker_token(tmp_path, adapter_root):
    server = ControlPlaneServer(make_config(tmp_path, adapter_root, worker_token="wtok"))
    await server.start()
    target = f"127.0.0.1:{server.port}"
    try:
        bad = FakeWorker(target, "bad")
        await bad.start()
        good = FakeWorker(target, "good", token="wtok")
        await good.start()
        await good.wait_until(lambda w: w.connected.is_set())
        await refused(bad)
        assert bad.last_error.code() == grpc.StatusCode.UNAUTHENTICATED and not bad.connected.is_set()
    finally:
        await bad.stop()
        await good.stop()
        await server.stop()


async def test_health_and_reflection(target):
    async with grpc.aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "loraplane.registry.v1.AdapterRegistry", "loraplane.worker.v1.WorkerControl"):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = [s.name async for r in call for s in r.list_services_response.service]
    assert "loraplane.registry.v1.AdapterRegistry" in names and "loraplane.worker.v1.WorkerControl" in names


async def test_duplicate_live_worker_id_is_refused_and_the_first_keeps_serving(registry, workers, target):
    first = await workers("w0")
    rogue = FakeWorker(target, "w0")
    await rogue.start()
    try:
        await refused(rogue)
        assert rogue.last_error.code() == grpc.StatusCode.ALREADY_EXISTS and not rogue.connected.is_set()
        assert "w0" in rogue.last_error.details()
    finally:
        await rogue.stop()
    assert first.connected.is_set() and first.num_connects == 1 and first.last_error is None
    listed = await registry.ListWorkers(reg.ListWorkersRequest())
    assert [(w.worker_id, w.state) for w in listed.workers] == [("w0", reg.WORKER_STATE_READY)]


async def _stream_after_hello(target: str, message: wk.ConnectRequest) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(target) as channel:
        call = worker_pb2_grpc.WorkerControlStub(channel).Connect()
        await call.write(wk.ConnectRequest(hello=wk.Hello(worker_id="odd", base_model_name="tiny-llama")))
        await call.read()  # the Sync
        await call.write(message)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            while True:
                await call.read()
    return info.value


@pytest.mark.parametrize(
    "heartbeat",
    [
        wk.Heartbeat(kv_usage=float("nan")),
        wk.Heartbeat(kv_usage=float("inf")),
        wk.Heartbeat(kv_usage=1.5),
        wk.Heartbeat(kv_usage=-0.1),
        wk.Heartbeat(num_waiting=-1),
        wk.Heartbeat(num_running=-3),
    ],
)
async def test_heartbeat_with_impossible_numbers_is_invalid_argument(registry, target, heartbeat):
    error = await _stream_after_hello(target, wk.ConnectRequest(heartbeat=heartbeat))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "heartbeat" in error.details()
    listed = await registry.ListWorkers(reg.ListWorkersRequest(include_down=True))
    assert [(w.worker_id, w.kv_usage) for w in listed.workers] == [("odd", 0.0)]


async def test_a_cancelled_stream_is_down_at_once_not_after_the_heartbeat_timeout(registry, target):
    async with grpc.aio.insecure_channel(target) as channel:
        call = worker_pb2_grpc.WorkerControlStub(channel).Connect()
        await call.write(wk.ConnectRequest(hello=wk.Hello(worker_id="gone", base_model_name="tiny-llama")))
        await call.read()  # the Sync: the session is registered
        listed = await registry.ListWorkers(reg.ListWorkersRequest())
        assert [w.worker_id for w in listed.workers] == ["gone"]
        call.cancel()
        for _ in range(40):  # 2 s, well under the heartbeat timeout
            if not (await registry.ListWorkers(reg.ListWorkersRequest())).workers:
                break
            await asyncio.sleep(0.05)
    assert (await registry.ListWorkers(reg.ListWorkersRequest())).workers == []
