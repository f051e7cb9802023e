"""The control plane as a real process: kill -9 right after an acknowledged create loses nothing."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import grpc
import pytest
from fake_worker import FakeWorker
from process import ControlPlaneProcess
from test_registry import create_request
from test_workers import refused

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


def _control_plane_cli(tmp_path, listen: str, env: dict) -> subprocess.Popen:
    argv = [sys.executable, "-m", "loraplane.control_plane", "--listen", listen, "--data-dir", str(tmp_path)]
    tokens = ("LORAPLANE_WORKER_TOKEN", "LORAPLANE_ADMIN_TOKEN")
    environ = {k: v for k, v in os.environ.items() if k not in tokens}
    return subprocess.Popen(
        argv, env={**environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_beyond_loopback_without_worker_token_refuses_to_start(tmp_path):
    proc = _control_plane_cli(tmp_path, "0.0.0.0:0", {})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "needs a worker token" in err and "LORAPLANE_WORKER_TOKEN" in err


def test_beyond_loopback_without_admin_token_refuses_to_start(tmp_path):
    proc = _control_plane_cli(tmp_path, "0.0.0.0:0", {"LORAPLANE_WORKER_TOKEN": "fleet-secret"})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "needs an admin token" in err and "LORAPLANE_ADMIN_TOKEN" in err


async def test_beyond_loopback_with_worker_token_refuses_a_rogue_worker(tmp_path):
    tokens = {"LORAPLANE_WORKER_TOKEN": "fleet-secret", "LORAPLANE_ADMIN_TOKEN": "admin-secret"}
    proc = _control_plane_cli(tmp_path, "0.0.0.0:0", tokens)
    try:
        port = re.search(r":(\d+)$", proc.stdout.readline().strip()).group(1)
        rogue = FakeWorker(f"127.0.0.1:{port}", "rogue")
        member = FakeWorker(f"127.0.0.1:{port}", "member", token="fleet-secret")
        for worker in (rogue, member):
            await worker.start()
        await member.wait_until(lambda w: w.connected.is_set())
        await refused(rogue)
        assert rogue.last_error.code() == grpc.StatusCode.UNAUTHENTICATED and not rogue.connected.is_set()
        await rogue.stop()
        await member.stop()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize(
    "method",
    [
        "/loraplane.registry.v1.AdapterRegistry/GetAdapter",
        "/loraplane.registry.v1.AdapterRegistry/CreateAdapter",
        "/loraplane.registry.v1.AdapterRegistry/ListWorkers",
        "/grpc.health.v1.Health/Check",
    ],
)
async def test_undecodable_request_bytes_are_invalid_argument(target, method):
    async with grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary(method)(b"\xff\xff\xff", metadata=ADMIN)
    assert (
        info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        and "could not be parsed" in info.value.details()
    )


async def test_undecodable_streamed_message_is_invalid_argument(target):
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.stream_stream("/loraplane.worker.v1.WorkerControl/Connect")()
        await call.write(b"\xff\xff\xff")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
    assert (
        info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        and "could not be parsed" in info.value.details()
    )
