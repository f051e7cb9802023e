"""Fixtures: a real control plane on loopback (SQLite in tmp_path), stubs, fake workers, adapters."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from adapter_files import write_adapter  # noqa: E402
from fake_worker import FakeWorker  # noqa: E402

from loraplane.control_plane.config import ControlPlaneConfig  # noqa: E402
from loraplane.control_plane.server import ControlPlaneServer  # noqa: E402
from loraplane.grpc_options import client_options  # noqa: E402
from loraplane.registry.v1 import registry_pb2_grpc  # noqa: E402

ADMIN_TOKEN = "test-admin-secret"
BASE_MODEL = "tiny-llama"


@pytest.fixture
def adapter_root(tmp_path: Path) -> Path:
    root = tmp_path / "adapters"
    root.mkdir()
    return root


@pytest.fixture
def make_adapter(adapter_root: Path) -> Callable[..., Path]:
    def make(name: str = "lora", **kwargs) -> Path:
        return write_adapter(adapter_root / name, **kwargs)

    return make


def make_config(tmp_path: Path, adapter_root: Path, **overrides) -> ControlPlaneConfig:
    values = dict(
        listen="127.0.0.1:0",
        data_dir=tmp_path / "data",
        adapter_roots=(adapter_root,),
        admin_token=ADMIN_TOKEN,
        rollout_timeout_s=5.0,
        heartbeat_interval_s=1,
        heartbeat_timeout_s=3.0,
        shutdown_grace_s=0.2,
    )
    values.update(overrides)
    return ControlPlaneConfig(**values)


@pytest.fixture
async def server(tmp_path: Path, adapter_root: Path) -> AsyncIterator[ControlPlaneServer]:
    cp = ControlPlaneServer(make_config(tmp_path, adapter_root))
    await cp.start()
    yield cp
    await cp.stop()


@pytest.fixture
def target(server: ControlPlaneServer) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture
async def registry(target: str) -> AsyncIterator[registry_pb2_grpc.AdapterRegistryStub]:
    async with grpc.aio.insecure_channel(target, options=client_options(64 * 1024 * 1024)) as channel:
        yield registry_pb2_grpc.AdapterRegistryStub(channel)


ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


@pytest.fixture
async def workers(target: str) -> AsyncIterator[Callable[..., FakeWorker]]:
    started: list[FakeWorker] = []

    async def start(worker_id: str, base_model: str = BASE_MODEL, **kwargs) -> FakeWorker:
        worker = FakeWorker(target, worker_id, base_model, **kwargs)
        await worker.start()
        await worker.wait_until(lambda w: w.num_connects > 0 and w.connected.is_set())
        started.append(worker)
        return worker

    yield start
    for worker in started:
        await worker.stop()
