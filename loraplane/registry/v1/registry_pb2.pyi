import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from loraplane.common.v1 import residency_pb2 as _residency_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_STATE_UNSPECIFIED: _ClassVar[WorkerState]
    WORKER_STATE_READY: _ClassVar[WorkerState]
    WORKER_STATE_DOWN: _ClassVar[WorkerState]
    WORKER_STATE_DRAINING: _ClassVar[WorkerState]
WORKER_STATE_UNSPECIFIED: WorkerState
WORKER_STATE_READY: WorkerState
WORKER_STATE_DOWN: WorkerState
WORKER_STATE_DRAINING: WorkerState

class AdapterSource(_message.Message):
    __slots__ = ("path", "hub_id", "revision")
    PATH_FIELD_NUMBER: _ClassVar[int]
    HUB_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    path: str
    hub_id: str
    revision: str
    def __init__(self, path: _Optional[str] = ..., hub_id: _Optional[str] = ..., revision: _Optional[str] = ...) -> None: ...

class AdapterResidency(_message.Message):
    __slots__ = ("worker_id", "state", "version", "error", "update_time")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    state: _residency_pb2.ResidencyState
    version: str
    error: str
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, worker_id: _Optional[str] = ..., state: _Optional[_Union[_residency_pb2.ResidencyState, str]] = ..., version: _Optional[str] = ..., error: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Adapter(_message.Message):
    __slots__ = ("name", "source", "base_model_name", "version", "rank", "target_modules", "create_time", "update_time", "residency")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    RESIDENCY_FIELD_NUMBER: _ClassVar[int]
    name: str
    source: AdapterSource
    base_model_name: str
    version: str
    rank: int
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    residency: _containers.RepeatedCompositeFieldContainer[AdapterResidency]
    def __init__(self, name: _Optional[str] = ..., source: _Optional[_Union[AdapterSource, _Mapping]] = ..., base_model_name: _Optional[str] = ..., version: _Optional[str] = ..., rank: _Optional[int] = ..., target_modules: _Optional[_Iterable[str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., residency: _Optional[_Iterable[_Union[AdapterResidency, _Mapping]]] = ...) -> None: ...

class CreateAdapterRequest(_message.Message):
    __slots__ = ("adapter", "replace", "rollout_timeout_ms", "request_id")
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    adapter: Adapter
    replace: bool
    rollout_timeout_ms: int
    request_id: str
    def __init__(self, adapter: _Optional[_Union[Adapter, _Mapping]] = ..., replace: _Optional[bool] = ..., rollout_timeout_ms: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateAdapterResponse(_message.Message):
    __slots__ = ("adapter", "loaded_workers", "failed_workers", "pending_workers", "message", "replaced", "deduplicated")
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    LOADED_WORKERS_FIELD_NUMBER: _ClassVar[int]
    FAILED_WORKERS_FIELD_NUMBER: _ClassVar[int]
    PENDING_WORKERS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATED_FIELD_NUMBER: _ClassVar[int]
    adapter: Adapter
    loaded_workers: _containers.RepeatedScalarFieldContainer[str]
    failed_workers: _containers.RepeatedScalarFieldContainer[str]
    pending_workers: _containers.RepeatedScalarFieldContainer[str]
    message: str
    replaced: bool
    deduplicated: bool
    def __init__(self, adapter: _Optional[_Union[Adapter, _Mapping]] = ..., loaded_workers: _Optional[_Iterable[str]] = ..., failed_workers: _Optional[_Iterable[str]] = ..., pending_workers: _Optional[_Iterable[str]] = ..., message: _Optional[str] = ..., replaced: _Optional[bool] = ..., deduplicated: _Optional[bool] = ...) -> None: ...

class GetAdapterRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetAdapterResponse(_message.Message):
    __slots__ = ("adapter",)
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    adapter: Adapter
    def __init__(self, adapter: _Optional[_Union[Adapter, _Mapping]] = ...) -> None: ...

class ListAdaptersRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "base_model_name")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    base_model_name: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., base_model_name: _Optional[str] = ...) -> None: ...

class ListAdaptersResponse(_message.Message):
    __slots__ = ("adapters", "next_page_token", "total_size")
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    adapters: _containers.RepeatedCompositeFieldContainer[Adapter]
    next_page_token: str
    total_size: int
    def __init__(self, adapters: _Optional[_Iterable[_Union[Adapter, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class DeleteAdapterRequest(_message.Message):
    __slots__ = ("name", "allow_missing")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MISSING_FIELD_NUMBER: _ClassVar[int]
    name: str
    allow_missing: bool
    def __init__(self, name: _Optional[str] = ..., allow_missing: _Optional[bool] = ...) -> None: ...

class DeleteAdapterResponse(_message.Message):
    __slots__ = ("adapter", "unloaded_workers")
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    UNLOADED_WORKERS_FIELD_NUMBER: _ClassVar[int]
    adapter: Adapter
    unloaded_workers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, adapter: _Optional[_Union[Adapter, _Mapping]] = ..., unloaded_workers: _Optional[_Iterable[str]] = ...) -> None: ...

class Worker(_message.Message):
    __slots__ = ("worker_id", "base_model_name", "endpoint", "state", "last_heartbeat_time", "connect_time", "num_waiting", "num_running", "kv_usage", "max_loras", "max_cpu_loras", "adapters")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_TIME_FIELD_NUMBER: _ClassVar[int]
    CONNECT_TIME_FIELD_NUMBER: _ClassVar[int]
    NUM_WAITING_FIELD_NUMBER: _ClassVar[int]
    NUM_RUNNING_FIELD_NUMBER: _ClassVar[int]
    KV_USAGE_FIELD_NUMBER: _ClassVar[int]
    MAX_LORAS_FIELD_NUMBER: _ClassVar[int]
    MAX_CPU_LORAS_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    base_model_name: str
    endpoint: str
    state: WorkerState
    last_heartbeat_time: _timestamp_pb2.Timestamp
    connect_time: _timestamp_pb2.Timestamp
    num_waiting: int
    num_running: int
    kv_usage: float
    max_loras: int
    max_cpu_loras: int
    adapters: _containers.RepeatedCompositeFieldContainer[WorkerAdapter]
    def __init__(self, worker_id: _Optional[str] = ..., base_model_name: _Optional[str] = ..., endpoint: _Optional[str] = ..., state: _Optional[_Union[WorkerState, str]] = ..., last_heartbeat_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., connect_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., num_waiting: _Optional[int] = ..., num_running: _Optional[int] = ..., kv_usage: _Optional[float] = ..., max_loras: _Optional[int] = ..., max_cpu_loras: _Optional[int] = ..., adapters: _Optional[_Iterable[_Union[WorkerAdapter, _Mapping]]] = ...) -> None: ...

class WorkerAdapter(_message.Message):
    __slots__ = ("name", "version", "state")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    state: _residency_pb2.ResidencyState
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., state: _Optional[_Union[_residency_pb2.ResidencyState, str]] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ("base_model_name", "include_down")
    BASE_MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DOWN_FIELD_NUMBER: _ClassVar[int]
    base_model_name: str
    include_down: bool
    def __init__(self, base_model_name: _Optional[str] = ..., include_down: _Optional[bool] = ...) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[Worker]
    def __init__(self, workers: _Optional[_Iterable[_Union[Worker, _Mapping]]] = ...) -> None: ...
