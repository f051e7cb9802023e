"""Domain form of the WorkerControl messages (protobuf stops at the servicer; see convert.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from loraplane.control_plane.records import ResidencyState


def new_command_id() -> str:
    """A unique command id ("cmd-" + 32 hex digits)."""
    return f"cmd-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class AdapterSpec:
    """An adapter a worker should hold; `source` is a local path or a hub id."""

    name: str
    version: str
    source: str
    revision: str = ""
    base_model_name: str = ""
    pinned: bool = False


@dataclass(frozen=True)
class SyncCommand:
    command_id: str
    adapters: tuple[AdapterSpec, ...]


@dataclass(frozen=True)
class LoadCommand:
    command_id: str
    adapter: AdapterSpec
    stage_only: bool = False
    activate: bool = False


@dataclass(frozen=True)
class UnloadCommand:
    command_id: str
    name: str
    version: str = ""


Command = SyncCommand | LoadCommand | UnloadCommand


@dataclass(frozen=True)
class ResidentAdapter:
    """An adapter a worker reports holding; `state` is DEVICE, HOST, DISK or LOADING."""

    name: str
    version: str
    state: ResidencyState
    pinned: bool = False


@dataclass(frozen=True)
class AdapterFailure:
    name: str
    error_code: str
    error_message: str


@dataclass(frozen=True)
class CommandOutcome:
    """A worker's answer to one command. `error_code` is the CommandErrorCode name without prefix
    ("RANK_TOO_LARGE", ...). proto3 cannot tell an empty `resident` from a missing one, so an empty
    list counts as a residency report only in the answer to a Sync."""

    command_id: str
    ok: bool
    error_code: str = ""
    error_message: str = ""
    resident: tuple[ResidentAdapter, ...] = ()
    adapter_errors: tuple[AdapterFailure, ...] = ()


@dataclass(frozen=True)
class Capacity:
    max_loras: int = 0
    max_lora_rank: int = 0
    max_cpu_loras: int = 0
    enable_lora: bool = True


@dataclass(frozen=True)
class HelloInfo:
    worker_id: str
    base_model_name: str
    endpoint: str
    capacity: Capacity = field(default_factory=Capacity)
    resident: tuple[ResidentAdapter, ...] = ()
    device: str = ""  # "cuda" or "cpu" (empty from older workers): where the DEVICE tier lives


@dataclass(frozen=True)
class HeartbeatInfo:
    num_waiting: int
    num_running: int
    kv_usage: float
    resident: tuple[ResidentAdapter, ...]
    draining: bool = False
