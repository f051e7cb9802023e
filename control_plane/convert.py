"""Protobuf <-> domain conversions for both services (the only module besides the servicers that
touches generated code)."""

from __future__ import annotations

import math

from google.protobuf.timestamp_pb2 import Timestamp

from loraplane.common.v1 import residency_pb2
from loraplane.control_plane.commands import (
    AdapterFailure,
    Capacity,
    Command,
    CommandOutcome,
    HeartbeatInfo,
    HelloInfo,
    LoadCommand,
    ResidentAdapter,
    SyncCommand,
    UnloadCommand,
)
from loraplane.control_plane.errors import InvalidArgumentError
from loraplane.control_plane.records import AdapterSourceRef, Residency, ResidencyState, WorkerRecord
from loraplane.control_plane.registry import AdapterView, CreateRequest
from loraplane.registry.v1 import registry_pb2 as reg
from loraplane.worker.v1 import worker_pb2 as wk

# The one residency map, both ways: record enum <-> loraplane.common.v1.ResidencyState, member by name.
_STATE_TO_PB = {
    state: residency_pb2.ResidencyState.Value(f"RESIDENCY_STATE_{state.name}") for state in ResidencyState
}
_STATE_FROM_PB = {number: state for state, number in _STATE_TO_PB.items()}


def timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    if seconds:
        stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


# Registry service.
def create_request(request: reg.CreateAdapterRequest) -> CreateRequest:
    adapter = request.adapter
    source = AdapterSourceRef(
        path=adapter.source.path, hub_id=adapter.source.hub_id, revision=adapter.source.revision
    )
    timeout_s = max(request.rollout_timeout_ms, 0) / 1000
    return CreateRequest(
        adapter.name, source, adapter.base_model_name, request.replace, timeout_s, request.request_id
    )


def adapter_pb(view: AdapterView) -> reg.Adapter:
    record = view.record
    source = record.source
    source_pb = (
        reg.AdapterSource(path=source.path) if source.path else reg.AdapterSource(hub_id=source.hub_id)
    )
    source_pb.revision = source.revision
    return reg.Adapter(
        name=record.name,
        source=source_pb,
        base_model_name=record.base_model_name,
        version=record.version,
        rank=record.rank,
        target_modules=list(record.target_modules),
        create_time=timestamp(record.create_time),
        update_time=timestamp(record.update_time),
        residency=[residency_pb(row) for row in view.residency],
    )


def residency_pb(row: Residency) -> reg.AdapterResidency:
    return reg.AdapterResidency(
        worker_id=row.worker_id,
        state=_STATE_TO_PB[row.state],
        version=row.version,
        error=row.error,
        update_time=timestamp(row.update_time),
    )


def worker_pb(worker: WorkerRecord, residency: tuple[Residency, ...]) -> reg.Worker:
    return reg.Worker(
        worker_id=worker.worker_id,
        base_model_name=worker.base_model_name,
        endpoint=worker.endpoint,
        state=reg.WorkerState.Value(f"WORKER_STATE_{worker.state.name}"),
        last_heartbeat_time=timestamp(worker.last_heartbeat_time),
        connect_time=timestamp(worker.connect_time),
        num_waiting=worker.load.num_waiting,
        num_running=worker.load.num_running,
        kv_usage=worker.load.kv_usage,
        max_loras=worker.max_loras,
        max_cpu_loras=worker.max_cpu_loras,
        adapters=[
            reg.WorkerAdapter(name=row.adapter_name, version=row.version, state=_STATE_TO_PB[row.state])
            for row in residency
        ],
    )


# Worker service.
def hello_info(hello: wk.Hello) -> HelloInfo:
    capacity = hello.capacity
    return HelloInfo(
        worker_id=hello.worker_id,
        base_model_name=hello.base_model_name,
        endpoint=hello.endpoint,
        capacity=Capacity(
            capacity.max_loras, capacity.max_lora_rank, capacity.max_cpu_loras, capacity.enable_lora
        ),
        resident=resident(hello.resident_adapters),
        device=hello.device,
    )


def resident(items) -> tuple[ResidentAdapter, ...]:
    return tuple(
        ResidentAdapter(
            item.name, item.version, _STATE_FROM_PB.get(item.state, ResidencyState.DISK), item.pinned
        )
        for item in items
    )


def outcome(result: wk.CommandResult) -> CommandOutcome:
    return CommandOutcome(
        command_id=result.command_id,
        ok=result.ok,
        error_code=_error_code(result.error_code),
        error_message=result.error_message,
        resident=resident(result.resident_adapters),
        adapter_errors=tuple(
            AdapterFailure(e.name, _error_code(e.error_code), e.error_message) for e in result.adapter_errors
        ),
    )


def heartbeat_info(heartbeat: wk.Heartbeat) -> HeartbeatInfo:
    """The heartbeat's load, checked: counts >= 0 and `kv_usage` a finite fraction in [0, 1].

    A heartbeat outside that is a worker bug; the stream ends with INVALID_ARGUMENT (the worker
    reconnects) rather than storing a number routing cannot use."""
    for field_name in ("num_waiting", "num_running"):
        if getattr(heartbeat, field_name) < 0:
            raise InvalidArgumentError(
                f"heartbeat {field_name} must be >= 0, got {getattr(heartbeat, field_name)}"
            )
    if not (math.isfinite(heartbeat.kv_usage) and 0.0 <= heartbeat.kv_usage <= 1.0):
        raise InvalidArgumentError(
            f"heartbeat kv_usage must be a fraction in [0, 1], got {heartbeat.kv_usage}"
        )
    return HeartbeatInfo(
        num_waiting=heartbeat.num_waiting,
        num_running=heartbeat.num_running,
        kv_usage=heartbeat.kv_usage,
        resident=resident(heartbeat.resident_adapters),
        draining=heartbeat.draining,
    )


def command_pb(command: Command, heartbeat_interval_s: int = 0) -> wk.ConnectResponse:
    if isinstance(command, SyncCommand):
        sync = wk.Sync(command_id=command.command_id, adapters=[_spec_pb(spec) for spec in command.adapters])
        return wk.ConnectResponse(sync=sync, heartbeat_interval_s=heartbeat_interval_s)
    if isinstance(command, LoadCommand):
        load = wk.LoadAdapter(
            command_id=command.command_id,
            adapter=_spec_pb(command.adapter),
            stage_only=command.stage_only,
            activate=command.activate,
        )
        return wk.ConnectResponse(load_adapter=load, heartbeat_interval_s=heartbeat_interval_s)
    assert isinstance(command, UnloadCommand)
    unload = wk.UnloadAdapter(command_id=command.command_id, name=command.name, version=command.version)
    return wk.ConnectResponse(unload_adapter=unload, heartbeat_interval_s=heartbeat_interval_s)


def _spec_pb(spec) -> wk.AdapterSpec:
    return wk.AdapterSpec(
        name=spec.name,
        version=spec.version,
        source=spec.source,
        revision=spec.revision,
        base_model_name=spec.base_model_name,
        pinned=spec.pinned,
    )


def _error_code(code: int) -> str:
    if code == wk.COMMAND_ERROR_CODE_UNSPECIFIED:
        return ""
    return wk.CommandErrorCode.Name(code).removeprefix("COMMAND_ERROR_CODE_")
