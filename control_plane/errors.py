"""Domain errors of the control plane and the one table that maps them to gRPC status codes.

The registry logic raises these; `loraplane.control_plane.interceptors` turns them into statuses (see
`status_code`). Messages are written for a person: what was wrong and what to do about it.
"""

from __future__ import annotations

import grpc


class ControlPlaneError(Exception):
    """Base class of every error the control plane reports to a caller."""


class InvalidArgumentError(ControlPlaneError):
    """A request that can never succeed as written (bad name, source outside the roots, bad config)."""


class AdapterNotFoundError(ControlPlaneError):
    """No adapter has that name."""


class SourceNotFoundError(ControlPlaneError):
    """The adapter source (a local directory) does not exist."""


class AdapterExistsError(ControlPlaneError):
    """The adapter name is taken and replace was not asked for."""


class RolloutRejectedError(ControlPlaneError):
    """Every matching worker rejected the adapter (or, for a replace, some worker did)."""


class ServiceUnavailableError(ControlPlaneError):
    """The control plane is shutting down or cannot reach what the call needs right now."""


class AuthenticationError(ControlPlaneError):
    """A call that needs a token came without a valid one."""


_STATUS = (
    (InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (AdapterNotFoundError, grpc.StatusCode.NOT_FOUND),
    (SourceNotFoundError, grpc.StatusCode.NOT_FOUND),
    (AdapterExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (RolloutRejectedError, grpc.StatusCode.FAILED_PRECONDITION),
    (ServiceUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (AuthenticationError, grpc.StatusCode.UNAUTHENTICATED),
)


def status_code(error: ControlPlaneError) -> grpc.StatusCode:
    """The gRPC status code for a domain error (INTERNAL for anything unexpected)."""
    for cls, code in _STATUS:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL
