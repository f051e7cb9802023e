"""Base model names and adapter names share the `model` field: a worker whose served base model has the
name of a registered adapter is refused at Hello, with a message naming the clash, and joins once it
is resolved. (The other direction, an adapter named like a served base model, is test_bad_input's.)"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from fake_worker import FakeWorker

from loraplane.registry.v1 import registry_pb2 as reg
from loraplane.worker.v1 import worker_pb2 as wk
from loraplane.worker.v1 import worker_pb2_grpc
from tests.control_plane.conftest import ADMIN, BASE_MODEL


async def register(registry, name: str, path) -> None:
    adapter = reg.Adapter(name=name, source=reg.AdapterSource(path=str(path)), base_model_name=BASE_MODEL)
    await registry.CreateAdapter(reg.CreateAdapterRequest(adapter=adapter), metadata=ADMIN)


async def test_a_worker_serving_an_adapters_name_is_refused_naming_the_clash(target, registry, make_adapter):
    await register(registry, "smol-chat", make_adapter("chat"))
    hello = wk.ConnectRequest(hello=wk.Hello(worker_id="w9", base_model_name="smol-chat", endpoint="x:1"))
    async with grpc.aio.insecure_channel(target) as channel:
        call = worker_pb2_grpc.WorkerControlStub(channel).Connect()
        await call.write(hello)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = info.value.details()
    assert "'smol-chat'" in details and "registered adapter" in details and "--served-model-name" in details
    listed = await registry.ListWorkers(reg.ListWorkersRequest(include_down=True))
    assert [w.worker_id for w in listed.workers] == []  # never registered


async def test_the_refused_worker_joins_once_the_adapter_is_deleted(target, registry, make_adapter):
    await register(registry, "base-b", make_adapter("b"))
    worker = FakeWorker(target, "w1", base_model="base-b")
    await worker.start()
    try:
        for _ in range(200):
            if worker.last_error is not None:
                break
            await asyncio.sleep(0.05)
        assert worker.last_error is not None
        assert worker.last_error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert not worker.connected.is_set()
        await registry.DeleteAdapter(reg.DeleteAdapterRequest(name="base-b"), metadata=ADMIN)
        await worker.wait_until(lambda w: w.connected.is_set())
    finally:
        await worker.stop()
