"""The registry's SQLite schema: its migrations and the conversions between rows and records.

`migrate` brings a database to the newest schema inside the caller's transaction; the column lists and
the `*_row` / `*_from_row` pairs are the only places that know the column order. Used by
`loraplane.control_plane.sqlite_store.SQLiteStore`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

from loraplane.control_plane.records import (
    AdapterRecord,
    AdapterSourceRef,
    Residency,
    ResidencyState,
    WorkerLoad,
    WorkerRecord,
    WorkerState,
)

logger = logging.getLogger(__name__)

# Migration i brings the schema from version i to i + 1. Append only; never edit a shipped one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE adapters (
        name TEXT PRIMARY KEY,
        source_path TEXT NOT NULL,
        source_hub_id TEXT NOT NULL,
        source_revision TEXT NOT NULL,
        base_model_name TEXT NOT NULL,
        version TEXT NOT NULL,
        rank INTEGER NOT NULL,
        target_modules TEXT NOT NULL,
        create_time REAL NOT NULL,
        update_time REAL NOT NULL
    );
    CREATE INDEX adapters_base_model ON adapters (base_model_name, name);
    CREATE TABLE workers (
        worker_id TEXT PRIMARY KEY,
        base_model_name TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        state TEXT NOT NULL,
        connect_time REAL NOT NULL,
        last_heartbeat_time REAL NOT NULL,
        num_waiting INTEGER NOT NULL,
        num_running INTEGER NOT NULL,
        kv_usage REAL NOT NULL,
        max_loras INTEGER NOT NULL,
        max_cpu_loras INTEGER NOT NULL
    );
    CREATE TABLE residency (
        worker_id TEXT NOT NULL,
        adapter_name TEXT NOT NULL,
        version TEXT NOT NULL,
        state TEXT NOT NULL,
        error TEXT NOT NULL,
        update_time REAL NOT NULL,
        PRIMARY KEY (worker_id, adapter_name)
    );
    CREATE INDEX residency_adapter ON residency (adapter_name);
    """,
    # Residency tiers are named for what they are, not a device kind: a CPU worker's slots are not a GPU.
    """
    UPDATE residency SET state = 'device' WHERE state = 'gpu';
    UPDATE residency SET state = 'host' WHERE state = 'cpu';
    """,
    # The client's request id of the create that stored the record, so a retried create is recognized;
    # unique among records that have one.
    """
    ALTER TABLE adapters ADD COLUMN request_id TEXT NOT NULL DEFAULT '';
    CREATE UNIQUE INDEX adapters_request_id ON adapters (request_id) WHERE request_id != '';
    """,
)

ADAPTER_COLUMNS = (
    "name, source_path, source_hub_id, source_revision, base_model_name, version, rank, "
    "target_modules, create_time, update_time, request_id"
)
ADAPTER_PLACEHOLDERS = ",".join("?" * len(ADAPTER_COLUMNS.split(",")))
WORKER_COLUMNS = (
    "worker_id, base_model_name, endpoint, state, connect_time, last_heartbeat_time, num_waiting, "
    "num_running, kv_usage, max_loras, max_cpu_loras"
)
RESIDENCY_COLUMNS = "worker_id, adapter_name, version, state, error, update_time"


def schema_version(db: sqlite3.Connection) -> int:
    return db.execute("SELECT version FROM schema_version").fetchone()[0]


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Create the schema-version table if needed and apply the migrations `db` has not seen yet.

    Call inside a transaction. A database newer than this code (`path` names it) raises RuntimeError.
    """
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = db.execute("SELECT version FROM schema_version").fetchone()
    if row is None:
        db.execute("INSERT INTO schema_version (version) VALUES (0)")
    current = 0 if row is None else row[0]
    if current > len(MIGRATIONS):
        raise RuntimeError(
            f"{path} has schema version {current}, newer than this loraplane "
            f"({len(MIGRATIONS)}); upgrade loraplane or use another --data-dir"
        )
    for version in range(current, len(MIGRATIONS)):
        for statement in MIGRATIONS[version].split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute("UPDATE schema_version SET version = ?", (version + 1,))
        logger.info("registry schema migrated to version %d", version + 1)


def adapter_row(record: AdapterRecord) -> tuple:
    source = record.source
    return (
        record.name,
        source.path,
        source.hub_id,
        source.revision,
        record.base_model_name,
        record.version,
        record.rank,
        json.dumps(list(record.target_modules)),
        record.create_time,
        record.update_time,
        record.request_id,
    )


def adapter_from_row(row: tuple) -> AdapterRecord:
    name, path, hub_id, revision, base, version, rank, modules, created, updated, request_id = row
    return AdapterRecord(
        name=name,
        source=AdapterSourceRef(path=path, hub_id=hub_id, revision=revision),
        base_model_name=base,
        version=version,
        rank=rank,
        target_modules=tuple(json.loads(modules)),
        create_time=created,
        update_time=updated,
        request_id=request_id,
    )


def worker_row(record: WorkerRecord) -> tuple:
    load = record.load
    return (
        record.worker_id,
        record.base_model_name,
        record.endpoint,
        record.state.value,
        record.connect_time,
        record.last_heartbeat_time,
        load.num_waiting,
        load.num_running,
        load.kv_usage,
        record.max_loras,
        record.max_cpu_loras,
    )


def worker_from_row(row: tuple) -> WorkerRecord:
    worker_id, base, endpoint, state, connected, heartbeat, waiting, running, kv, max_loras, max_cpu = row
    return WorkerRecord(
        worker_id=worker_id,
        base_model_name=base,
        endpoint=endpoint,
        state=WorkerState(state),
        connect_time=connected,
        last_heartbeat_time=heartbeat,
        load=WorkerLoad(num_waiting=waiting, num_running=running, kv_usage=kv),
        max_loras=max_loras,
        max_cpu_loras=max_cpu,
    )


def residency_row(row: Residency) -> tuple:
    return (row.worker_id, row.adapter_name, row.version, row.state.value, row.error, row.update_time)


def residency_from_row(row: tuple) -> Residency:
    worker_id, name, version, state, error, updated = row
    return Residency(worker_id, name, version, ResidencyState(state), error, updated)
