"""The adapter registry's domain logic: create (with rollout), replace, get, list, delete, workers.

Transport-free: the AdapterRegistry servicer converts messages and calls these methods; errors are
`loraplane.control_plane.errors` classes mapped to status codes in one place.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, replace

from loraplane.control_plane.commands import CommandOutcome, LoadCommand, UnloadCommand, new_command_id
from loraplane.control_plane.config import ControlPlaneConfig
from loraplane.control_plane.errors import (
    AdapterExistsError,
    AdapterNotFoundError,
    InvalidArgumentError,
    RequestIdConflictError,
    RolloutRejectedError,
)
from loraplane.control_plane.fleet import WorkerSession, broadcast
from loraplane.control_plane.records import (
    AdapterRecord,
    AdapterSourceRef,
    Residency,
    WorkerRecord,
    WorkerState,
)
from loraplane.control_plane.sources import resolve_source, stored_source
from loraplane.control_plane.validation import (
    check_base_model_name,
    check_name,
    check_not_base_model,
    check_request_id,
)
from loraplane.control_plane.workers import WorkerHub, spec_for

logger = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class CreateRequest:
    name: str
    source: AdapterSourceRef
    base_model_name: str = ""
    replace: bool = False
    rollout_timeout_s: float = 0.0  # 0 = the server's default
    request_id: str = ""  # the client's idempotency key; "" = no deduplication


@dataclass(frozen=True)
class AdapterView:
    record: AdapterRecord
    residency: tuple[Residency, ...]


@dataclass(frozen=True)
class CreateResult:
    adapter: AdapterView
    loaded_workers: tuple[str, ...]
    failed_workers: tuple[str, ...]
    pending_workers: tuple[str, ...]
    message: str
    replaced: bool
    deduplicated: bool = False


@dataclass(frozen=True)
class Rollout:
    """Answers of one broadcast, by worker id."""

    outcomes: dict[str, CommandOutcome | None]

    @property
    def ok(self) -> tuple[str, ...]:
        return tuple(w for w, o in self.outcomes.items() if o is not None and o.ok)

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(w for w, o in self.outcomes.items() if o is not None and not o.ok)

    @property
    def pending(self) -> tuple[str, ...]:
        return tuple(w for w, o in self.outcomes.items() if o is None)

    def errors(self) -> str:
        return "; ".join(
            f"{w}: {o.error_code}: {o.error_message}"
            for w, o in self.outcomes.items()
            if o is not None and not o.ok
        )


class AdapterService:
    """Registry operations over a store and the connected workers."""

    def __init__(self, config: ControlPlaneConfig, hub: WorkerHub) -> None:
        self.config = config
        self.hub = hub
        self.store = hub.store
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def create(self, request: CreateRequest) -> CreateResult:
        """Validate, persist, roll out. Semantics in the module docstring of control_plane.workers and
        registry.v1.CreateAdapter: all matching workers rejecting -> rolled back, RolloutRejectedError.
        A `request_id` already stored with a record makes this a retry: that record comes back unchanged
        when the adapter asked for is the same, else RequestIdConflictError."""
        name = check_name(request.name)
        base = check_base_model_name(request.base_model_name)
        request_id = check_request_id(request.request_id)
        check_not_base_model(name, {base} | {worker.base_model_name for worker in self.store.list_workers()})
        timeout = request.rollout_timeout_s or self.config.rollout_timeout_s
        async with self._locks[name]:
            prior = self.store.get_adapter_by_request_id(request_id) if request_id else None
            if prior is not None:
                return self._retried(prior, request)
            existing = self.store.get_adapter(name)
            if existing is not None and not request.replace:
                raise AdapterExistsError(
                    f"adapter {name!r} already exists (version {existing.version[:12]}); pass replace "
                    "(--replace) to roll out new files under this name, or pick another name"
                )
            source, checked = await resolve_source(request.source, self.config)
            now = time.time()
            version, rank, modules = checked.version, checked.rank, checked.target_modules
            record = AdapterRecord(name, source, base, version, rank, modules, now, now, request_id)
            if existing is None:
                return await self._create_new(record, timeout)
            return await self._replace(existing, record, timeout)

    def _retried(self, prior: AdapterRecord, request: CreateRequest) -> CreateResult:
        """The answer to a create whose request id `prior` was stored with: `prior`, if it is the same
        adapter (name, source, base model); a different adapter under a used id is a client bug."""
        asked = (request.name, stored_source(request.source, self.config), request.base_model_name)
        if asked != (prior.name, prior.source, prior.base_model_name):
            raise RequestIdConflictError(
                f"request_id {request.request_id!r} was already used to create adapter {prior.name!r} "
                f"from {prior.source.location!r} (base model {prior.base_model_name or '*'!r}), not this "
                "adapter; a retry must send the same adapter, a new create a new request_id"
            )
        message = f"request {request.request_id!r} was already applied; returning the stored adapter"
        return replace(self._result(prior, Rollout({}), message, replaced=False), deduplicated=True)

    async def _create_new(self, record: AdapterRecord, timeout: float) -> CreateResult:
        self.store.insert_adapter(record)
        logger.info("adapter %s registered (version %s)", record.name, record.version[:12])
        sessions = self.hub.fleet.serving(record.base_model_name)
        rollout = await self._load(sessions, record, timeout)
        if sessions and not rollout.ok and not rollout.pending:
            self.store.delete_adapter(record.name)
            raise RolloutRejectedError(
                f"every worker rejected adapter {record.name!r}, so it was not registered: {rollout.errors()}"
            )
        return self._result(record, rollout, _rollout_message(record, rollout), replaced=False)

    async def _replace(self, old: AdapterRecord, new: AdapterRecord, timeout: float) -> CreateResult:
        if new.base_model_name != old.base_model_name:
            raise InvalidArgumentError(
                f"adapter {old.name!r} belongs to base model {old.base_model_name!r}; a replace cannot "
                "move it to another base model (delete it and create it again)"
            )
        new = replace(new, create_time=old.create_time)
        if new.version == old.version and new.source == old.source:
            rollout = Rollout({})
            return self._result(old, rollout, "already registered with these files; nothing changed", False)
        sessions = self.hub.fleet.serving(new.base_model_name)
        staged = await self._load(sessions, new, timeout, stage_only=True)
        if staged.failed or staged.pending:
            await self._unstage(sessions, new, staged, timeout)
            why = staged.errors() or f"no answer within {timeout:g} s from {', '.join(staged.pending)}"
            raise RolloutRejectedError(
                f"replace of adapter {new.name!r} aborted; every worker keeps version "
                f"{old.version[:12]}: {why}"
            )
        self.store.update_adapter(new)
        activated = await self._load(self.hub.fleet.serving(new.base_model_name), new, timeout, activate=True)
        logger.info("adapter %s replaced (version %s -> %s)", new.name, old.version[:12], new.version[:12])
        return self._result(new, activated, _rollout_message(new, activated), replaced=True)

    async def _load(
        self,
        sessions: list[WorkerSession],
        record: AdapterRecord,
        timeout: float,
        stage_only: bool = False,
        activate: bool = False,
    ) -> Rollout:
        def make(session: WorkerSession) -> LoadCommand:
            command = LoadCommand(
                new_command_id(), spec_for(record), stage_only=stage_only, activate=activate
            )
            self.hub.mark_sent(session, command)
            return command

        return Rollout(await broadcast(sessions, make, timeout))

    async def _unstage(
        self, sessions: list[WorkerSession], record: AdapterRecord, staged: Rollout, timeout: float
    ) -> None:
        holders = set(staged.ok) | set(staged.pending)
        targets = [s for s in sessions if s.worker_id in holders]
        unload = lambda s: UnloadCommand(new_command_id(), record.name, record.version)
        await broadcast(targets, unload, min(timeout, 5.0))

    def get(self, name: str) -> AdapterView:
        record = self.store.get_adapter(check_name(name))
        if record is None:
            raise AdapterNotFoundError(
                f"no adapter named {name!r}; `loraplane adapters list` shows what exists"
            )
        return self._view(record)

    def list_adapters(
        self, page_size: int, page_token: str, base_model_name: str = ""
    ) -> tuple[list[AdapterView], str, int]:
        """One page of adapters ordered by name, the next page token ("" at the end) and the total."""
        if page_size < 0:
            raise InvalidArgumentError(f"page_size must be >= 0, got {page_size}")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _decode_token(page_token)
        records = self.store.list_adapters(base_model_name, after=after, limit=size + 1)
        next_token = _encode_token(records[size - 1].name) if len(records) > size else ""
        views = [self._view(record) for record in records[:size]]
        return views, next_token, self.store.count_adapters(base_model_name)

    async def delete(self, name: str, allow_missing: bool) -> tuple[AdapterView | None, tuple[str, ...]]:
        """Remove the record (durably) and tell every worker holding it to unload."""
        name = check_name(name)
        async with self._locks[name]:
            record = self.store.get_adapter(name)
            if record is None:
                if allow_missing:
                    return None, ()
                raise AdapterNotFoundError(f"no adapter named {name!r} to delete")
            view = self._view(record)
            self.store.delete_adapter(name)
            logger.info("adapter %s deleted", name)
            sessions = self.hub.fleet.serving(record.base_model_name)
            unload = lambda s: UnloadCommand(new_command_id(), name)
            await broadcast(sessions, unload, self.config.rollout_timeout_s)
            return view, tuple(s.worker_id for s in sessions)

    def list_workers(
        self, base_model_name: str = "", include_down: bool = False
    ) -> list[tuple[WorkerRecord, tuple[Residency, ...]]]:
        workers = [
            w
            for w in self.store.list_workers()
            if (not base_model_name or w.base_model_name == base_model_name)
            and (include_down or w.state != WorkerState.DOWN)
        ]
        return [(w, tuple(self.store.residency_for_worker(w.worker_id))) for w in workers]

    def _view(self, record: AdapterRecord) -> AdapterView:
        return AdapterView(record, tuple(self.store.residency_for_adapter(record.name)))

    def _result(self, record: AdapterRecord, rollout: Rollout, message: str, replaced: bool) -> CreateResult:
        return CreateResult(
            self._view(record), rollout.ok, rollout.failed, rollout.pending, message, replaced
        )


def _rollout_message(record: AdapterRecord, rollout: Rollout) -> str:
    total = len(rollout.outcomes)
    if total == 0:
        base = record.base_model_name or "any base model"
        return (
            f"stored; no worker serving {base} is connected, so no worker holds it yet; "
            "workers get it through Sync when they connect"
        )
    parts = [f"loaded on {len(rollout.ok)} of {total} workers"]
    if rollout.failed:
        parts.append(f"rejected by {len(rollout.failed)} ({rollout.errors()})")
    if rollout.pending:
        parts.append(f"still loading on {len(rollout.pending)} (no answer before the deadline)")
    return "; ".join(parts)


def _encode_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def _decode_token(token: str) -> str:
    if not token:
        return ""
    try:
        return check_name(base64.urlsafe_b64decode(token.encode()).decode())
    except (binascii.Error, UnicodeDecodeError, ValueError, InvalidArgumentError) as exc:
        raise InvalidArgumentError(
            "page_token is not one this server issued; start again without it"
        ) from exc
