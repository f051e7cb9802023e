"""The registry store interface: what the service needs from persistence, nothing about SQL.

`SQLiteStore` (loraplane.control_plane.sqlite_store) is the default; a server database can implement the same
protocol without touching the service. Every mutating method is durable when it returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from loraplane.control_plane.records import AdapterRecord, Residency, WorkerLoad, WorkerRecord, WorkerState


class RegistryStore(Protocol):
    """Adapters, workers and residency.

    Semantics: adapter names are unique; `list_adapters` orders by name and returns names strictly after
    `after`; a non-empty `request_id` belongs to at most one record (inserting a second raises
    `RequestIdConflictError`); residency is keyed by (worker_id, adapter_name) and is dropped with its
    adapter.
    """

    def get_adapter(self, name: str) -> AdapterRecord | None: ...

    def get_adapter_by_request_id(self, request_id: str) -> AdapterRecord | None:
        """The record a create with this (non-empty) client request id stored, if it still exists."""
        ...

    def list_adapters(
        self, base_model_name: str = "", after: str = "", limit: int | None = None
    ) -> list[AdapterRecord]: ...

    def count_adapters(self, base_model_name: str = "") -> int: ...

    def insert_adapter(self, record: AdapterRecord) -> None: ...

    def update_adapter(self, record: AdapterRecord) -> None: ...

    def delete_adapter(self, name: str) -> bool: ...

    def upsert_worker(self, record: WorkerRecord) -> None: ...

    def set_worker_state(self, worker_id: str, state: WorkerState) -> None: ...

    def record_heartbeat(self, worker_id: str, load: WorkerLoad, time: float) -> None: ...

    def mark_all_workers_down(self) -> None: ...

    def get_worker(self, worker_id: str) -> WorkerRecord | None: ...

    def list_workers(self) -> list[WorkerRecord]: ...

    def set_residency(self, residency: Residency) -> None: ...

    def replace_worker_residency(
        self, worker_id: str, rows: Sequence[Residency], keep_names: set[str]
    ) -> None:
        """Make `rows` the worker's residency; rows of other names are dropped unless in `keep_names`."""
        ...

    def delete_residency(self, worker_id: str, adapter_name: str) -> None: ...

    def residency_for_adapter(self, adapter_name: str) -> list[Residency]: ...

    def residency_for_worker(self, worker_id: str) -> list[Residency]: ...

    def close(self) -> None: ...
