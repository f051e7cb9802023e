"""Records the registry store keeps: adapters, workers and per-worker residency (no protobuf here)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ResidencyState(str, enum.Enum):
    """How far an adapter has got on one worker (mirrors loraplane.common.v1.ResidencyState, member for
    member; the values are what the store keeps). DEVICE is an adapter slot on the worker's device (a GPU
    or, on a CPU worker, host memory), HOST the worker's host-memory cache."""

    LOADING = "loading"
    DEVICE = "device"
    HOST = "host"
    DISK = "disk"
    FAILED = "failed"
    UNLOADING = "unloading"


class WorkerState(str, enum.Enum):
    """Whether a worker is reachable (mirrors registry.v1.WorkerState)."""

    READY = "ready"
    DOWN = "down"
    DRAINING = "draining"


@dataclass(frozen=True)
class AdapterSourceRef:
    """Where an adapter's files come from: exactly one of `path` (resolved, under a root) or `hub_id`."""

    path: str = ""
    hub_id: str = ""
    revision: str = ""

    @property
    def location(self) -> str:
        return self.path or self.hub_id


@dataclass(frozen=True)
class AdapterRecord:
    """A registered adapter. Times are seconds since the epoch. `request_id` is the client's id of the
    create that stored this record ("" when it sent none): a retry carrying it gets this record back."""

    name: str
    source: AdapterSourceRef
    base_model_name: str
    version: str
    rank: int
    target_modules: tuple[str, ...]
    create_time: float
    update_time: float
    request_id: str = ""

    def serves(self, base_model_name: str) -> bool:
        """Whether a worker of `base_model_name` should hold this adapter (empty = any base model)."""
        return not self.base_model_name or self.base_model_name == base_model_name


@dataclass(frozen=True)
class Residency:
    """One worker's view of one adapter."""

    worker_id: str
    adapter_name: str
    version: str
    state: ResidencyState
    error: str = ""
    update_time: float = 0.0


@dataclass(frozen=True)
class WorkerLoad:
    """Load figures from the latest heartbeat."""

    num_waiting: int = 0
    num_running: int = 0
    kv_usage: float = 0.0


@dataclass(frozen=True)
class WorkerRecord:
    """An inference worker as the control plane last saw it."""

    worker_id: str
    base_model_name: str
    endpoint: str
    state: WorkerState
    connect_time: float = 0.0
    last_heartbeat_time: float = 0.0
    load: WorkerLoad = field(default_factory=WorkerLoad)
    max_loras: int = 0
    max_cpu_loras: int = 0
