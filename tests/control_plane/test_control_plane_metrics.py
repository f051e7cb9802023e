"""The control plane's /metrics on its own port, scraped with prometheus_client's parser around real
registry calls and fake workers speaking the real stream protocol."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from loraplane.control_plane.server import ControlPlaneServer
from loraplane.registry.v1 import registry_pb2 as reg
from loraplane.supervisor import free_port
from tests.control_plane.conftest import ADMIN, make_config
from tests.control_plane.test_registry import create_request
from tests.loraplane.prometheus_scrape import scrape, value


@pytest.fixture
async def server(tmp_path, adapter_root):
    cp = ControlPlaneServer(make_config(tmp_path, adapter_root, metrics_port=free_port()))
    await cp.start()
    yield cp
    await cp.stop()


async def test_series_exist_and_move_with_registry_calls_and_workers(server, registry, workers, make_adapter):
    url = f"http://{server.metrics_server.address}/metrics"
    assert server.metrics_server.address == f"127.0.0.1:{server.config.metrics_port}"
    before = await asyncio.to_thread(scrape, url)
    assert value(before, "loraplane:registered_workers", state="ready") == 0
    assert value(before, "loraplane:connected_workers") == 0
    assert value(before, "loraplane:registered_adapters") == 0
    assert "loraplane:adapter_residency" in before

    await workers("w0")
    await registry.CreateAdapter(create_request("sql-lora", make_adapter("sql")), metadata=ADMIN)
    await registry.GetAdapter(reg.GetAdapterRequest(name="sql-lora"))
    with pytest.raises(grpc.aio.AioRpcError):
        await registry.GetAdapter(reg.GetAdapterRequest(name="missing"))
    with pytest.raises(grpc.aio.AioRpcError):  # no admin token: refused before the servicer
        await registry.CreateAdapter(create_request("x", make_adapter("x")))
    after = await asyncio.to_thread(scrape, url)

    requests = "loraplane:registry_requests_total"
    assert value(after, requests, method="CreateAdapter", code="OK") == 1
    assert value(after, requests, method="CreateAdapter", code="UNAUTHENTICATED") == 1
    assert value(after, requests, method="GetAdapter", code="OK") == 1
    assert value(after, requests, method="GetAdapter", code="NOT_FOUND") == 1
    assert value(after, "loraplane:registry_request_duration_seconds_count", method="GetAdapter") == 2
    assert value(after, "loraplane:worker_commands_total", command="sync", result="ok") == 1
    assert value(after, "loraplane:worker_commands_total", command="load", result="ok") == 1
    assert value(after, "loraplane:worker_command_latency_seconds_count", command="load") == 1
    assert value(after, "loraplane:registered_workers", state="ready") == 1
    assert value(after, "loraplane:connected_workers") == 1
    assert value(after, "loraplane:registered_adapters") == 1
    assert value(after, "loraplane:adapter_residency", state="host") == 1


def test_metrics_port_is_checked(tmp_path, adapter_root):
    with pytest.raises(ValueError, match="--metrics-port"):
        make_config(tmp_path, adapter_root, metrics_port=-1)
