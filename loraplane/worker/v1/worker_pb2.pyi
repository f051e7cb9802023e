import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from loraplane.common.v1 import residency_pb2 as _residency_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CommandErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMMAND_ERROR_CODE_UNSPECIFIED: _ClassVar[CommandErrorCode]
    COMMAND_ERROR_CODE_SOURCE_NOT_FOUND: _ClassVar[CommandErrorCode]
    COMMAND_ERROR_CODE_INVALID_ADAPTER: _ClassVar[CommandErrorCode]
    COMMAND_ERROR_CODE_RANK_TOO_LARGE: _ClassVar[CommandErrorCode]
    COMMAND_ERROR_CODE_BASE_MODEL_MISMATCH: _ClassVar[CommandErrorCode]
    COMMAND_ERROR_CODE_VERSION_MISMATCH: _ClassVar[CommandErrorCode]
    COMMAND_ERROR_CODE_CAPACITY: _ClassVar[CommandErrorCode]
    COMMAND_ERROR_CODE_NOT_FOUND: _ClassVar[CommandErrorCode]
    COMMAND_ERROR_CODE_INTERNAL: _ClassVar[CommandErrorCode]
COMMAND_ERROR_CODE_UNSPECIFIED: CommandErrorCode
COMMAND_ERROR_CODE_SOURCE_NOT_FOUND: CommandErrorCode
COMMAND_ERROR_CODE_INVALID_ADAPTER: CommandErrorCode
COMMAND_ERROR_CODE_RANK_TOO_LARGE: CommandErrorCode
COMMAND_ERROR_CODE_BASE_MODEL_MISMATCH: CommandErrorCode
COMMAND_ERROR_CODE_VERSION_MISMATCH: CommandErrorCode
COMMAND_ERROR_CODE_CAPACITY: CommandErrorCode
COMMAND_ERROR_CODE_NOT_FOUND: CommandErrorCode
COMMAND_ERROR_CODE_INTERNAL: CommandErrorCode

class ConnectRequest(_message.Message):
    __slots__ = ("hello", "command_result", "heartbeat")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    COMMAND_RESULT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    command_result: CommandResult
    heartbeat: Heartbeat
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., command_result: _Optional[_Union[CommandResult, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class ConnectResponse(_message.Message):
    __slots__ = ("sync", "load_adapter", "unload_adapter", "heartbeat_interval_s")
    SYNC_FIELD_NUMBER: _ClassVar[int]
    LOAD_ADAPTER_FIELD_NUMBER: _ClassVar[int]
    UNLOAD_ADAPTER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    sync: Sync
    load_adapter: LoadAdapter
    unload_adapter: UnloadAdapter
    heartbeat_interval_s: int
    def __init__(self, sync: _Optional[_Union[Sync, _Mapping]] = ..., load_adapter: _Optional[_Union[LoadAdapter, _Mapping]] = ..., unload_adapter: _Optional[_Union[UnloadAdapter, _Mapping]] = ..., heartbeat_interval_s: _Optional[int] = ...) -> None: ...

class ResidentAdapter(_message.Message):
    __slots__ = ("name", "version", "state", "pinned")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    state: _residency_pb2.ResidencyState
    pinned: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., state: _Optional[_Union[_residency_pb2.ResidencyState, str]] = ..., pinned: _Optional[bool] = ...) -> None: ...

class Capacity(_message.Message):
    __slots__ = ("max_loras", "max_lora_rank", "max_cpu_loras", "max_num_seqs", "max_model_len", "num_kv_blocks", "enable_lora")
    MAX_LORAS_FIELD_NUMBER: _ClassVar[int]
    MAX_LORA_RANK_FIELD_NUMBER: _ClassVar[int]
    MAX_CPU_LORAS_FIELD_NUMBER: _ClassVar[int]
    MAX_NUM_SEQS_FIELD_NUMBER: _ClassVar[int]
    MAX_MODEL_LEN_FIELD_NUMBER: _ClassVar[int]
    NUM_KV_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    ENABLE_LORA_FIELD_NUMBER: _ClassVar[int]
    max_loras: int
    max_lora_rank: int
    max_cpu_loras: int
    max_num_seqs: int
    max_model_len: int
    num_kv_blocks: int
    enable_lora: bool
    def __init__(self, max_loras: _Optional[int] = ..., max_lora_rank: _Optional[int] = ..., max_cpu_loras: _Optional[int] = ..., max_num_seqs: _Optional[int] = ..., max_model_len: _Optional[int] = ..., num_kv_blocks: _Optional[int] = ..., enable_lora: _Optional[bool] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("worker_id", "base_model_name", "endpoint", "capacity", "resident_adapters", "software_version", "device")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    base_model_name: str
    endpoint: str
    capacity: Capacity
    resident_adapters: _containers.RepeatedCompositeFieldContainer[ResidentAdapter]
    software_version: str
    device: str
    def __init__(self, worker_id: _Optional[str] = ..., base_model_name: _Optional[str] = ..., endpoint: _Optional[str] = ..., capacity: _Optional[_Union[Capacity, _Mapping]] = ..., resident_adapters: _Optional[_Iterable[_Union[ResidentAdapter, _Mapping]]] = ..., software_version: _Optional[str] = ..., device: _Optional[str] = ...) -> None: ...

class AdapterSpec(_message.Message):
    __slots__ = ("name", "version", "source", "revision", "base_model_name", "pinned")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    source: str
    revision: str
    base_model_name: str
    pinned: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., source: _Optional[str] = ..., revision: _Optional[str] = ..., base_model_name: _Optional[str] = ..., pinned: _Optional[bool] = ...) -> None: ...

class Sync(_message.Message):
    __slots__ = ("command_id", "adapters")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    adapters: _containers.RepeatedCompositeFieldContainer[AdapterSpec]
    def __init__(self, command_id: _Optional[str] = ..., adapters: _Optional[_Iterable[_Union[AdapterSpec, _Mapping]]] = ...) -> None: ...

class LoadAdapter(_message.Message):
    __slots__ = ("command_id", "adapter", "stage_only", "activate")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    STAGE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ACTIVATE_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    adapter: AdapterSpec
    stage_only: bool
    activate: bool
    def __init__(self, command_id: _Optional[str] = ..., adapter: _Optional[_Union[AdapterSpec, _Mapping]] = ..., stage_only: _Optional[bool] = ..., activate: _Optional[bool] = ...) -> None: ...

class UnloadAdapter(_message.Message):
    __slots__ = ("command_id", "name", "version")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    name: str
    version: str
    def __init__(self, command_id: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class CommandResult(_message.Message):
    __slots__ = ("command_id", "ok", "error_code", "error_message", "resident_adapters", "adapter_errors")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ERRORS_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    ok: bool
    error_code: CommandErrorCode
    error_message: str
    resident_adapters: _containers.RepeatedCompositeFieldContainer[ResidentAdapter]
    adapter_errors: _containers.RepeatedCompositeFieldContainer[AdapterError]
    def __init__(self, command_id: _Optional[str] = ..., ok: _Optional[bool] = ..., error_code: _Optional[_Union[CommandErrorCode, str]] = ..., error_message: _Optional[str] = ..., resident_adapters: _Optional[_Iterable[_Union[ResidentAdapter, _Mapping]]] = ..., adapter_errors: _Optional[_Iterable[_Union[AdapterError, _Mapping]]] = ...) -> None: ...

class AdapterError(_message.Message):
    __slots__ = ("name", "error_code", "error_message")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    error_code: CommandErrorCode
    error_message: str
    def __init__(self, name: _Optional[str] = ..., error_code: _Optional[_Union[CommandErrorCode, str]] = ..., error_message: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("time", "num_waiting", "num_running", "kv_usage", "resident_adapters", "draining")
    TIME_FIELD_NUMBER: _ClassVar[int]
    NUM_WAITING_FIELD_NUMBER: _ClassVar[int]
    NUM_RUNNING_FIELD_NUMBER: _ClassVar[int]
    KV_USAGE_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    num_waiting: int
    num_running: int
    kv_usage: float
    resident_adapters: _containers.RepeatedCompositeFieldContainer[ResidentAdapter]
    draining: bool
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., num_waiting: _Optional[int] = ..., num_running: _Optional[int] = ..., kv_usage: _Optional[float] = ..., resident_adapters: _Optional[_Iterable[_Union[ResidentAdapter, _Mapping]]] = ..., draining: _Optional[bool] = ...) -> None: ...
