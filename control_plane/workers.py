"""The worker side of the control plane: stream lifecycle, answers, heartbeats and residency.

Semantics (the WorkerControl protocol as implemented):
- A stream starts with Hello. The worker is recorded READY, its reported adapters become its residency,
  and it gets a Sync with every adapter registered for its base model (plus those with an empty base
  model), together with `heartbeat_interval_s`.
- Every command carries a fresh command id; the worker answers each with a CommandResult of that id.
  A result's `resident_adapters` (when present) replace the worker's residency; a failed load marks the
  adapter FAILED on that worker with "CODE: message"; Sync's `adapter_errors` do the same per adapter.
- Heartbeats refresh load and residency. Any message counts as a sign of life; a worker silent for
  `heartbeat_timeout_s` is marked DOWN and its stream is closed with UNAVAILABLE (it reconnects).
- Residency is only ever claimed for a connected worker: when a stream ends (or the control plane
  starts, when no stream is open) the worker's residency rows are dropped, so no read counts a worker
  that is down as holding adapters. Its Hello on reconnect reports what it still holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from loraplane.control_plane.commands import (
    AdapterSpec,
    Command,
    CommandOutcome,
    HeartbeatInfo,
    HelloInfo,
    LoadCommand,
    ResidentAdapter,
    SyncCommand,
    UnloadCommand,
    new_command_id,
)
from loraplane.control_plane.fleet import Fleet, WorkerSession
from loraplane.control_plane.records import (
    AdapterRecord,
    Residency,
    ResidencyState,
    WorkerLoad,
    WorkerRecord,
    WorkerState,
)
from loraplane.control_plane.store import RegistryStore

logger = logging.getLogger(__name__)

_IN_FLIGHT = (ResidencyState.FAILED, ResidencyState.LOADING, ResidencyState.UNLOADING)


def spec_for(record: AdapterRecord) -> AdapterSpec:
    """What a worker is told about an adapter: local path or hub id, and the version to check."""
    return AdapterSpec(
        name=record.name,
        version=record.version,
        source=record.source.location,
        revision=record.source.revision,
        base_model_name=record.base_model_name,
    )


class WorkerHub:
    """Tracks worker streams and keeps the store's worker and residency rows current."""

    def __init__(
        self, store: RegistryStore, fleet: Fleet, heartbeat_interval_s: float, heartbeat_timeout_s: float
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.heartbeat_interval_s = heartbeat_interval_s
        self.heartbeat_timeout_s = heartbeat_timeout_s

    def connect(self, hello: HelloInfo) -> WorkerSession:
        """Register a new stream and queue its Sync."""
        session = WorkerSession(hello)
        now = time.time()
        self.fleet.attach(session)
        self.store.upsert_worker(
            WorkerRecord(
                worker_id=hello.worker_id,
                base_model_name=hello.base_model_name,
                endpoint=hello.endpoint,
                state=WorkerState.READY,
                connect_time=now,
                last_heartbeat_time=now,
                max_loras=hello.capacity.max_loras,
                max_cpu_loras=hello.capacity.max_cpu_loras,
            )
        )
        self.apply_report(hello.worker_id, hello.resident, keep_in_flight=False)
        desired = [r for r in self.store.list_adapters() if r.serves(hello.base_model_name)]
        session.send(SyncCommand(new_command_id(), tuple(spec_for(r) for r in desired)))
        logger.info(
            "worker %s connected (%s, base model %r, %d adapters resident, syncing %d)",
            hello.worker_id,
            hello.device or "device not reported",
            hello.base_model_name,
            len(hello.resident),
            len(desired),
        )
        return session

    def disconnect(self, session: WorkerSession, reason: str) -> None:
        session.close(reason)
        if self.fleet.detach(session):
            self.store.set_worker_state(session.worker_id, WorkerState.DOWN)
            self.forget_residency(session.worker_id)
            logger.info("worker %s disconnected: %s", session.worker_id, reason)

    def forget_residency(self, worker_id: str) -> None:
        """Drop what a worker that is not connected was said to hold (module docstring)."""
        self.store.replace_worker_residency(worker_id, [], set())

    def reset(self) -> None:
        """At start-up no stream is open: every stored worker is down and holds nothing we can vouch for."""
        self.store.mark_all_workers_down()
        for worker in self.store.list_workers():
            self.forget_residency(worker.worker_id)

    def on_result(self, session: WorkerSession, outcome: CommandOutcome) -> None:
        session.last_seen = time.monotonic()
        command = session.resolve(outcome)
        if command is None:
            logger.warning("worker %s answered unknown command %s", session.worker_id, outcome.command_id)
            return
        self._record_outcome(session.worker_id, command, outcome)

    def on_heartbeat(self, session: WorkerSession, heartbeat: HeartbeatInfo) -> None:
        session.last_seen = time.monotonic()
        load = WorkerLoad(heartbeat.num_waiting, heartbeat.num_running, heartbeat.kv_usage)
        self.store.record_heartbeat(session.worker_id, load, time.time())
        if heartbeat.draining:
            self.store.set_worker_state(session.worker_id, WorkerState.DRAINING)
        self.apply_report(session.worker_id, heartbeat.resident, keep_in_flight=True)

    def mark_sent(self, session: WorkerSession, command: LoadCommand) -> None:
        """Record LOADING for a plain load (a staged load keeps the serving version's row)."""
        if not command.stage_only and not command.activate:
            spec = command.adapter
            self.store.set_residency(
                Residency(session.worker_id, spec.name, spec.version, ResidencyState.LOADING, "", time.time())
            )

    def expire_silent(self) -> list[str]:
        """Close the streams of workers silent for longer than the heartbeat timeout."""
        deadline = time.monotonic() - self.heartbeat_timeout_s
        expired = [s for s in self.fleet.sessions() if s.last_seen < deadline]
        for session in expired:
            logger.warning("worker %s missed its heartbeats; marking it down", session.worker_id)
            self.disconnect(session, f"no heartbeat for {self.heartbeat_timeout_s:g} s")
        return [s.worker_id for s in expired]

    async def watch_heartbeats(self) -> None:
        """Run `expire_silent` forever (cancel the task to stop)."""
        period = max(0.05, min(1.0, self.heartbeat_timeout_s / 4))
        while True:
            await asyncio.sleep(period)
            self.expire_silent()

    def apply_report(self, worker_id: str, resident: Sequence[ResidentAdapter], keep_in_flight: bool) -> None:
        """Make the worker's reported adapters its residency (the registry's version wins a tie)."""
        now = time.time()
        chosen: dict[str, ResidentAdapter] = {}
        for item in resident:
            record = self.store.get_adapter(item.name)
            if item.name not in chosen or (record is not None and item.version == record.version):
                chosen[item.name] = item
        rows = [Residency(worker_id, a.name, a.version, a.state, "", now) for a in chosen.values()]
        keep = set()
        if keep_in_flight:
            keep = {
                r.adapter_name for r in self.store.residency_for_worker(worker_id) if r.state in _IN_FLIGHT
            }
        self.store.replace_worker_residency(worker_id, rows, keep - set(chosen))

    def _record_outcome(self, worker_id: str, command: Command, outcome: CommandOutcome) -> None:
        if outcome.resident or isinstance(command, SyncCommand):
            self.apply_report(worker_id, outcome.resident, keep_in_flight=True)
        now = time.time()
        if isinstance(command, LoadCommand) and not command.stage_only:
            spec = command.adapter
            if not outcome.ok:
                error = f"{outcome.error_code}: {outcome.error_message}"
                self.store.set_residency(
                    Residency(worker_id, spec.name, spec.version, ResidencyState.FAILED, error, now)
                )
            elif spec.name not in {a.name for a in outcome.resident}:
                self.store.set_residency(
                    Residency(worker_id, spec.name, spec.version, ResidencyState.HOST, "", now)
                )
        elif isinstance(command, UnloadCommand) and outcome.ok and not command.version:
            self.store.delete_residency(worker_id, command.name)
        elif isinstance(command, SyncCommand):
            versions = {spec.name: spec.version for spec in command.adapters}
            for failure in outcome.adapter_errors:
                error = f"{failure.error_code}: {failure.error_message}"
                version = versions.get(failure.name, "")
                self.store.set_residency(
                    Residency(worker_id, failure.name, version, ResidencyState.FAILED, error, now)
                )
