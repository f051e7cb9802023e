"""SQLiteStore: migrations, WAL, CRUD, paging and durability across reopen."""

from __future__ import annotations

import sqlite3

import pytest

from loraplane.control_plane.records import (
    AdapterRecord,
    AdapterSourceRef,
    Residency,
    ResidencyState,
    WorkerLoad,
    WorkerRecord,
    WorkerState,
)
from loraplane.control_plane.sqlite_store import MIGRATIONS, SQLiteStore


def record(name: str, base: str = "m", version: str = "v1") -> AdapterRecord:
    return AdapterRecord(name, AdapterSourceRef(path=f"/a/{name}"), base, version, 8, ("q_proj",), 1.0, 2.0)


def test_schema_version_and_wal(tmp_path):
    store = SQLiteStore.in_dir(tmp_path)
    assert store.schema_version == len(MIGRATIONS)
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    again = SQLiteStore.in_dir(tmp_path)  # migrating twice is a no-op
    assert again.schema_version == len(MIGRATIONS)


def test_newer_schema_is_refused(tmp_path):
    SQLiteStore.in_dir(tmp_path).close()
    db = sqlite3.connect(tmp_path / "registry.sqlite3")
    db.execute("UPDATE schema_version SET version = 99")
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="newer than this loraplane"):
        SQLiteStore.in_dir(tmp_path)


def test_adapters_crud_and_paging(tmp_path):
    store = SQLiteStore.in_dir(tmp_path)
    for name in ("c", "a", "b"):
        store.insert_adapter(record(name, base="m" if name != "b" else "other"))
    with pytest.raises(sqlite3.IntegrityError):
        store.insert_adapter(record("a"))
    assert [r.name for r in store.list_adapters()] == ["a", "b", "c"]
    assert [r.name for r in store.list_adapters(after="a", limit=1)] == ["b"]
    assert [r.name for r in store.list_adapters(base_model_name="m")] == ["a", "c"]
    assert store.count_adapters() == 3 and store.count_adapters("other") == 1
    store.update_adapter(record("a", version="v2"))
    assert store.get_adapter("a") == record("a", version="v2")
    store.set_residency(Residency("w", "a", "v2", ResidencyState.DEVICE, "", 3.0))
    assert store.delete_adapter("a") and not store.delete_adapter("a")
    assert store.residency_for_adapter("a") == []
    store.close()
    assert [r.name for r in SQLiteStore.in_dir(tmp_path).list_adapters()] == ["b", "c"]


def test_workers_and_residency(tmp_path):
    store = SQLiteStore.in_dir(tmp_path)
    store.upsert_worker(WorkerRecord("w", "m", "h:1", WorkerState.READY, 1.0, 1.0, WorkerLoad(), 4, 8))
    store.record_heartbeat("w", WorkerLoad(2, 3, 0.5), 5.0)
    worker = store.get_worker("w")
    assert worker.load == WorkerLoad(2, 3, 0.5) and worker.last_heartbeat_time == 5.0
    store.mark_all_workers_down()
    assert store.list_workers()[0].state == WorkerState.DOWN
    store.set_residency(Residency("w", "x", "v", ResidencyState.FAILED, "bad", 1.0))
    store.set_residency(Residency("w", "y", "v", ResidencyState.HOST, "", 1.0))
    store.replace_worker_residency(
        "w", [Residency("w", "z", "v", ResidencyState.DEVICE, "", 2.0)], keep_names={"x"}
    )
    assert [(r.adapter_name, r.state) for r in store.residency_for_worker("w")] == [
        ("x", ResidencyState.FAILED),
        ("z", ResidencyState.DEVICE),
    ]
