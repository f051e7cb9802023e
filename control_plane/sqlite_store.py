"""SQLite implementation of the registry store: one file, WAL, a schema-version table, migrations.

The schema, its migrations and the row <-> record conversions live in
`loraplane.control_plane.sqlite_schema` (`MIGRATIONS` is re-exported here).

Durability: `synchronous=FULL` with WAL, so a commit that returned survives kill -9 (and power loss).
One connection guarded by a lock; calls are short and made from the event loop thread.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from loraplane.control_plane.errors import RequestIdConflictError
from loraplane.control_plane.records import AdapterRecord, Residency, WorkerLoad, WorkerRecord, WorkerState
from loraplane.control_plane.sqlite_schema import (
    ADAPTER_COLUMNS,
    ADAPTER_PLACEHOLDERS,
    MIGRATIONS,
    RESIDENCY_COLUMNS,
    WORKER_COLUMNS,
    adapter_from_row,
    adapter_row,
    migrate,
    residency_from_row,
    residency_row,
    schema_version,
    worker_from_row,
    worker_row,
)

__all__ = ["DB_FILE", "MIGRATIONS", "SQLiteStore"]

DB_FILE = "registry.sqlite3"


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
        return schema_version(self._db)

    def _migrate(self) -> None:
        with self._tx() as db:
            migrate(db, self.path)

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
        rows = self._query(f"SELECT {ADAPTER_COLUMNS} FROM adapters WHERE name = ?", (name,))
        return adapter_from_row(rows[0]) if rows else None

    def get_adapter_by_request_id(self, request_id: str) -> AdapterRecord | None:
        rows = self._query(f"SELECT {ADAPTER_COLUMNS} FROM adapters WHERE request_id = ?", (request_id,))
        return adapter_from_row(rows[0]) if rows and request_id else None

    def list_adapters(
        self, base_model_name: str = "", after: str = "", limit: int | None = None
    ) -> list[AdapterRecord]:
        sql = f"SELECT {ADAPTER_COLUMNS} FROM adapters WHERE name > ?"
        params: list[object] = [after]
        if base_model_name:
            sql += " AND base_model_name = ?"
            params.append(base_model_name)
        sql += " ORDER BY name"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [adapter_from_row(row) for row in self._query(sql, params)]

    def count_adapters(self, base_model_name: str = "") -> int:
        if base_model_name:
            rows = self._query("SELECT COUNT(*) FROM adapters WHERE base_model_name = ?", (base_model_name,))
        else:
            rows = self._query("SELECT COUNT(*) FROM adapters")
        return rows[0][0]

    def insert_adapter(self, record: AdapterRecord) -> None:
        with self._tx() as db:
            _put_adapter(db, record)

    def update_adapter(self, record: AdapterRecord) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM adapters WHERE name = ?", (record.name,))
            _put_adapter(db, record)

    def delete_adapter(self, name: str) -> bool:
        with self._tx() as db:
            deleted = db.execute("DELETE FROM adapters WHERE name = ?", (name,)).rowcount
            db.execute("DELETE FROM residency WHERE adapter_name = ?", (name,))
        return deleted > 0

    # Workers.
    def upsert_worker(self, record: WorkerRecord) -> None:
        with self._tx() as db:
            db.execute(
                f"INSERT OR REPLACE INTO workers ({WORKER_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                worker_row(record),
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
        rows = self._query(f"SELECT {WORKER_COLUMNS} FROM workers WHERE worker_id = ?", (worker_id,))
        return worker_from_row(rows[0]) if rows else None

    def list_workers(self) -> list[WorkerRecord]:
        return [
            worker_from_row(row)
            for row in self._query(f"SELECT {WORKER_COLUMNS} FROM workers ORDER BY worker_id")
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
        sql = f"SELECT {RESIDENCY_COLUMNS} FROM residency WHERE adapter_name = ? ORDER BY worker_id"
        return [residency_from_row(row) for row in self._query(sql, (adapter_name,))]

    def residency_for_worker(self, worker_id: str) -> list[Residency]:
        sql = f"SELECT {RESIDENCY_COLUMNS} FROM residency WHERE worker_id = ? ORDER BY adapter_name"
        return [residency_from_row(row) for row in self._query(sql, (worker_id,))]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _put_adapter(db: sqlite3.Connection, record: AdapterRecord) -> None:
    try:
        sql = f"INSERT INTO adapters ({ADAPTER_COLUMNS}) VALUES ({ADAPTER_PLACEHOLDERS})"
        db.execute(sql, adapter_row(record))
    except sqlite3.IntegrityError as exc:
        if "request_id" not in str(exc):
            raise
        raise RequestIdConflictError(
            f"request_id {record.request_id!r} was already used to create another adapter; "
            "send a new request_id for a new create"
        ) from exc


def _put_residency(db: sqlite3.Connection, row: Residency) -> None:
    db.execute(
        f"INSERT OR REPLACE INTO residency ({RESIDENCY_COLUMNS}) VALUES (?,?,?,?,?,?)", residency_row(row)
    )
