"""Domain errors of the control plane (no transport code here).

The registry logic raises these; `loraplane.control_plane.interceptors.STATUS_BY_ERROR` is the one table
that turns them into gRPC statuses. Messages are written for a person: what was wrong and what to do.
"""

from __future__ import annotations


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


class ModelNameClashError(ControlPlaneError):
    """A worker's served base model has the name of a registered adapter (one `model` name, two meanings)."""


class RequestIdConflictError(ControlPlaneError):
    """A create reused a client request id that belongs to a different adapter (a different request)."""


class RolloutRejectedError(ControlPlaneError):
    """Every matching worker rejected the adapter (or, for a replace, some worker did)."""


class ServiceUnavailableError(ControlPlaneError):
    """The control plane is shutting down or cannot reach what the call needs right now."""


class AuthenticationError(ControlPlaneError):
    """A call that needs a token came without a valid one."""
