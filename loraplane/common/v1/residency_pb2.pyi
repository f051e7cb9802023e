from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class ResidencyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESIDENCY_STATE_UNSPECIFIED: _ClassVar[ResidencyState]
    RESIDENCY_STATE_LOADING: _ClassVar[ResidencyState]
    RESIDENCY_STATE_DEVICE: _ClassVar[ResidencyState]
    RESIDENCY_STATE_HOST: _ClassVar[ResidencyState]
    RESIDENCY_STATE_DISK: _ClassVar[ResidencyState]
    RESIDENCY_STATE_FAILED: _ClassVar[ResidencyState]
    RESIDENCY_STATE_UNLOADING: _ClassVar[ResidencyState]
RESIDENCY_STATE_UNSPECIFIED: ResidencyState
RESIDENCY_STATE_LOADING: ResidencyState
RESIDENCY_STATE_DEVICE: ResidencyState
RESIDENCY_STATE_HOST: ResidencyState
RESIDENCY_STATE_DISK: ResidencyState
RESIDENCY_STATE_FAILED: ResidencyState
RESIDENCY_STATE_UNLOADING: ResidencyState
