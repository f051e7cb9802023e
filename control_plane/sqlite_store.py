"""SQLite implementation of the registry store: one file, WAL, a schema-version table, migrations.

Durability: `synchronous=FULL` with WAL, so a commit that returned survives kill -9 (and power loss).
One connection guarded by a lock; calls are short and made from the event loop thread.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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

DB_FILE = "registry.sqlite3"

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
)

_ADAPTER_COLUMNS = (
    "name, source_path, source_hub_id, source_revision, base_model_name, version, rank, "
    "target_modules, create_time, update_time"
)
_WORKER_COLUMNS = (
    "worker_id, base_model_name, endpoint, state, connect_time, last_heartbeat_time, num_waiting, "
    "num_running, kv_usage, max_loras, max_cpu_loras"
)
_RESIDENCY_COLUMNS = "worker_id, adapter_name, version, state, error, update_time"


class SQLiteStore:
    """The default `RegistryStore`. `path` is the database file (its folder is created)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    @classmethod
    def in_dir(cls, data_dir: str | Path) -> SQLiteStore:
        return cls(Path(data_dir) / DB_FILE)

    @property
    def schema_version(self) -> int:
        return self._db.execute("SELECT version FROM schema_version").fetchone()[0]

    def _migrate(self) -> None:
        with self._tx() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                db.execute("INSERT INTO schema_version (version) VALUES (0)")
            current = 0 if row is None else row[0]
            if current > len(MIGRATIONS):
                raise RuntimeError(
                    f"{self.path} has schema version {current}, newer than this loraplane "
                    f"({len(MIGRATIONS)}); upgrade loraplane or use another --data-dir"
                )
            for version in range(current, len(MIGRATIONS)):
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("UPDATE schema_version SET version = ?", (version + 1,))
                logger.info("registry schema migrated to version %d", version + 1)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # Adapters.
    def get_adapter(self, name: str) -> AdapterRecord | None:
        rows = self._query(f"SELECT {_ADAPTER_COLUMNS} FROM adapters WHERE name = ?", (name,))
        return _adapter(rows[0]) if rows else None

    def list_adapters(
        self, base_model_name: str = "", after: str = "", limit: int | None = None
    ) -> list[AdapterRecord]:
        sql = f"SELECT {_ADAPTER_COLUMNS} FROM adapters WHERE name > ?"
        params: list[object] = [after]
        if base_model_name:
            sql += " AND base_model_name = ?"
            params.append(base_model_name)
        sql += " ORDER BY name"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_adapter(row) for row in self._query(sql, params)]

    def count_adapters(self, base_model_name: str = "") -> int:
        if base_model_name:
            rows = self._query("SELECT COUNT(*) FROM adapters WHERE base_model_name = ?", (base_model_name,))
        else:
            rows = self._query("SELECT COUNT(*) FROM adapters")
        return rows[0][0]

    def insert_adapter(self, record: AdapterRecord) -> None:
        with self._tx() as db:
            db.execute(
                f"INSERT INTO adapters ({_ADAPTER_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", _row(record)
            )

    def update_adapter(self, record: AdapterRecord) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM adapters WHERE name = ?", (record.name,))
            db.execute(
                f"INSERT INTO adapters ({_ADAPTER_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", _row(record)
            )

    def delete_adapter(self, name: str) -> bool:
        with self._tx() as db:
            deleted = db.execute("DELETE FROM adapters WHERE name = ?", (name,)).rowcount
            db.execute("DELETE FROM residency WHERE adapter_name = ?", (name,))
        return deleted > 0

    # Workers.
    def upsert_worker(self, record: WorkerRecord) -> None:
        load = record.load
        values = (
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
        with self._tx() as db:
            db.execute(
                f"INSERT OR REPLACE INTO workers ({_WORKER_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", values
            )

    def set_worker_state(self, worker_id: str, state: WorkerState) -> None:
        with self._tx() as db:
            db.execute("UPDATE workers SET state = ? WHERE worker_id = ?", (state.value, worker_id))

    def record_heartbeat(self, worker_id: str, load: WorkerLoad, time: float) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE workers SET last_heartbeat_time = ?, num_waiting = ?, num_running = ?, kv_usage = ? "
                "WHERE worker_id = ?",
                (time, load.num_waiting, load.num_running, load.kv_usage, worker_id),
            )

    def mark_all_workers_down(self) -> None:
        with self._tx() as db:
            db.execute("UPDATE workers SET state = ?", (WorkerState.DOWN.value,))

    def get_worker(self, worker_id: str) -> WorkerRecord | None:
        rows = self._query(f"SELECT {_WORKER_COLUMNS} FROM workers WHERE worker_id = ?", (worker_id,))
        return _worker(rows[0]) if rows else None

    def list_workers(self) -> list[WorkerRecord]:
        return [
            _worker(row) for row in self._query(f"SELECT {_WORKER_COLUMNS} FROM workers ORDER BY worker_id")
        ]

    # Residency.
    def set_residency(self, residency: Residency) -> None:
        with self._tx() as db:
            _put_residency(db, residency)

    def replace_worker_residency(
        self, worker_id: str, rows: Sequence[Residency], keep_names: set[str]
    ) -> None:
        with self._tx() as db:
            present = {
                name
                for (name,) in db.execute(
                    "SELECT adapter_name FROM residency WHERE worker_id = ?", (worker_id,)
                )
            }
            reported = {row.adapter_name for row in rows}
            for name in present - reported - keep_names:
                db.execute(
                    "DELETE FROM residency WHERE worker_id = ? AND adapter_name = ?", (worker_id, name)
                )
            for row in rows:
                _put_residency(db, row)

    def delete_residency(self, worker_id: str, adapter_name: str) -> None:
        with self._tx() as db:
            db.execute(
                "DELETE FROM residency WHERE worker_id = ? AND adapter_name = ?", (worker_id, adapter_name)
            )

    def residency_for_adapter(self, adapter_name: str) -> list[Residency]:
        sql = f"SELECT {_RESIDENCY_COLUMNS} FROM residency WHERE adapter_name = ? ORDER BY worker_id"
        return [_residency(row) for row in self._query(sql, (adapter_name,))]

    def residency_for_worker(self, worker_id: str) -> list[Residency]:
        sql = f"SELECT {_RESIDENCY_COLUMNS} FROM residency WHERE worker_id = ? ORDER BY adapter_name"
        return [_residency(row) for row in self._query(sql, (worker_id,))]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _put_residency(db: sqlite3.Connection, row: Residency) -> None:
    db.execute(
        f"INSERT OR REPLACE INTO residency ({_RESIDENCY_COLUMNS}) VALUES (?,?,?,?,?,?)",
        (row.worker_id, row.adapter_name, row.version, row.state.value, row.error, row.update_time),
    )


def _row(record: AdapterRecord) -> tuple:
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
    )


def _adapter(row: tuple) -> AdapterRecord:
    name, path, hub_id, revision, base, version, rank, modules, created, updated = row
    return AdapterRecord(
        name=name,
        source=AdapterSourceRef(path=path, hub_id=hub_id, revision=revision),
        base_model_name=base,
        version=version,
        rank=rank,
        target_modules=tuple(json.loads(modules)),
        create_time=created,
        update_time=updated,
    )


def _worker(row: tuple) -> WorkerRecord:
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


def _residency(row: tuple) -> Residency:
    worker_id, name, version, state, error, updated = row
    return Residency(worker_id, name, version, ResidencyState(state), error, updated)
