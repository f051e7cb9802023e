"""Idempotent creates: a retried CreateAdapter carrying the same request id gets its own earlier record.

Over loopback gRPC against a real control plane (SQLite in tmp_path) with fake workers; the admin CLI's
retry runs as a real child process against a registry that drops the first call.
"""

from __future__ import annotations

import sqlite3
import threading
from concurrent import futures

import grpc
import pytest
from adapter_files import write_adapter
from test_admin_cli import cli

from loraplane.control_plane.sqlite_schema import MIGRATIONS
from loraplane.control_plane.sqlite_store import SQLiteStore
from loraplane.registry.v1 import registry_pb2 as reg
from loraplane.registry.v1 import registry_pb2_grpc
from tests.control_plane.conftest import ADMIN, BASE_MODEL


def create(name: str, path, request_id: str = "", replace: bool = False) -> reg.CreateAdapterRequest:
    adapter = reg.Adapter(name=name, source=reg.AdapterSource(path=str(path)), base_model_name=BASE_MODEL)
    return reg.CreateAdapterRequest(adapter=adapter, replace=replace, request_id=request_id)


async def rpc_error(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def test_a_retry_with_the_same_request_id_returns_the_stored_record(registry, workers, make_adapter):
    worker = await workers("w0")
    path = make_adapter("sql")
    first = await registry.CreateAdapter(create("sql-lora", path, "req-1"), metadata=ADMIN)
    assert first.loaded_workers == ["w0"] and not first.deduplicated
    write_adapter(path, seed=9)  # the files change between the call and its retry: still no new version
    again = await registry.CreateAdapter(create("sql-lora", path, "req-1"), metadata=ADMIN)
    assert again.deduplicated and not again.replaced and "already applied" in again.message
    assert again.adapter.version == first.adapter.version
    assert again.adapter.create_time == first.adapter.create_time
    assert worker.kinds().count("load_adapter") == 1
    # Without a request id (or with another one) a second create is today's ALREADY_EXISTS.
    for request_id in ("", "req-2"):
        error = await rpc_error(registry.CreateAdapter(create("sql-lora", path, request_id), metadata=ADMIN))
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_the_same_request_id_for_another_adapter_is_a_conflict(registry, make_adapter):
    path = make_adapter("a")
    await registry.CreateAdapter(create("a", path, "req-1"), metadata=ADMIN)
    for other in (create("b", path, "req-1"), create("a", make_adapter("other"), "req-1")):
        error = await rpc_error(registry.CreateAdapter(other, metadata=ADMIN))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "'req-1' was already used to create adapter 'a'" in error.details()
    listed = await registry.ListAdapters(reg.ListAdaptersRequest())
    assert [(a.name, a.source.path) for a in listed.adapters] == [("a", str(path))]


async def test_a_retried_replace_does_not_roll_out_again(registry, workers, make_adapter):
    worker = await workers("w0")
    await registry.CreateAdapter(create("r", make_adapter("r1")), metadata=ADMIN)
    path = make_adapter("r2", seed=5)
    first = await registry.CreateAdapter(create("r", path, "swap-1", replace=True), metadata=ADMIN)
    loads = worker.kinds().count("load_adapter")
    again = await registry.CreateAdapter(create("r", path, "swap-1", replace=True), metadata=ADMIN)
    assert first.replaced and again.deduplicated and again.adapter.version == first.adapter.version
    assert worker.kinds().count("load_adapter") == loads


async def test_the_idempotency_key_header_sets_the_request_id(registry, make_adapter):
    path = make_adapter("h")
    header = (*ADMIN, ("idempotency-key", "key-7"))
    await registry.CreateAdapter(create("h", path), metadata=header)
    again = await registry.CreateAdapter(create("h", path, "key-7"), metadata=ADMIN)
    assert again.deduplicated
    clash = await rpc_error(registry.CreateAdapter(create("h", path, "other"), metadata=header))
    assert clash.code() == grpc.StatusCode.INVALID_ARGUMENT and "Idempotency-Key" in clash.details()


@pytest.mark.parametrize("request_id", ["has space", "x" * 256, "caf\u00e9", "tab\there"])
async def test_a_malformed_request_id_is_refused(registry, make_adapter, request_id):
    request = create("m", make_adapter("m"), request_id)
    error = await rpc_error(registry.CreateAdapter(request, metadata=ADMIN))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in error.details()


def test_records_written_before_request_ids_migrate(tmp_path):
    db = sqlite3.connect(tmp_path / "registry.sqlite3")
    for migration in MIGRATIONS[:2]:
        db.executescript(migration)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version (version) VALUES (2)")
    row = ("old", "/a/old", "", "", "m", "v1", 8, '["q_proj"]', 1.0, 2.0)
    db.execute("INSERT INTO adapters VALUES (?,?,?,?,?,?,?,?,?,?)", row)
    db.commit()
    db.close()
    store = SQLiteStore.in_dir(tmp_path)
    assert store.get_adapter("old").request_id == "" and store.get_adapter_by_request_id("") is None
    store.close()


class _DropsFirstCreate(registry_pb2_grpc.AdapterRegistryServicer):
    """Answers UNAVAILABLE to the first create (as if the reply were lost), then succeeds."""

    def __init__(self) -> None:
        self.request_ids: list[str] = []
        self.lock = threading.Lock()

    def CreateAdapter(self, request, context):
        with self.lock:
            self.request_ids.append(request.request_id)
            if len(self.request_ids) == 1:
                context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
        return reg.CreateAdapterResponse(adapter=request.adapter, message="stored")


def test_the_cli_retries_an_unavailable_create_with_the_same_request_id(tmp_path):
    servicer = _DropsFirstCreate()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    registry_pb2_grpc.add_AdapterRegistryServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        path = write_adapter(tmp_path / "c")
        added = cli(None, "adapters", "add", "c", str(path), "--json", address=f"127.0.0.1:{port}")
    finally:
        server.stop(None)
    assert added.returncode == 0, added.stderr
    first, second = servicer.request_ids
    assert first == second and len(first) >= 32, servicer.request_ids
    assert "retrying with the same request id" in added.stderr
