"""The control plane as a real process: kill -9 right after an acknowledged create loses nothing."""

from __future__ import annotations

import socket

import grpc
from fake_worker import FakeWorker
from process import ControlPlaneProcess
from test_registry import create_request

from loraplane.registry.v1 import registry_pb2 as reg
from loraplane.registry.v1 import registry_pb2_grpc
from tests.control_plane.conftest import ADMIN, ADMIN_TOKEN


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_kill9_after_acknowledged_create_loses_nothing(tmp_path, adapter_root, make_adapter):
    cp = ControlPlaneProcess(tmp_path / "data", adapter_root, ADMIN_TOKEN, port=free_port())
    cp.start()
    workers = [FakeWorker(cp.target, f"w{i}") for i in range(2)]
    try:
        for worker in workers:
            await worker.start()
            await worker.wait_until(lambda w: w.connected.is_set())
        async with grpc.aio.insecure_channel(cp.target) as channel:
            stub = registry_pb2_grpc.AdapterRegistryStub(channel)
            await stub.CreateAdapter(create_request("before", make_adapter("before")), metadata=ADMIN)
            acked = await stub.CreateAdapter(
                create_request("acked", make_adapter("acked", seed=3)), metadata=ADMIN
            )
        cp.kill9()
        # While the control plane is down the workers keep what they hold.
        assert workers[0].adapters["acked"] == acked.adapter.version
        cp.start()  # same data dir, same port
        for worker in workers:
            await worker.wait_until(lambda w: w.num_connects >= 2 and len(w.received) >= 4, timeout=20)
        async with grpc.aio.insecure_channel(cp.target) as channel:
            stub = registry_pb2_grpc.AdapterRegistryStub(channel)
            listed = await stub.ListAdapters(reg.ListAdaptersRequest())
            assert [a.name for a in listed.adapters] == ["acked", "before"]
            assert listed.adapters[0].version == acked.adapter.version
            await stub.CreateAdapter(create_request("after", make_adapter("after", seed=4)), metadata=ADMIN)
            for worker in workers:
                await worker.wait_until(lambda w: set(w.adapters) == {"before", "acked", "after"})
                assert worker.kinds().count("sync") == 2
            got = await stub.GetAdapter(reg.GetAdapterRequest(name="acked"))
            assert sorted(r.worker_id for r in got.adapter.residency) == ["w0", "w1"]
    finally:
        try:
            for worker in workers:
                await worker.stop()
        finally:
            assert cp.stop() == 0
