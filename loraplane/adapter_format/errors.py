"""Errors of the adapter format: an adapter that cannot be read, validated or found.

Torch- and transport-free. The worker re-exports them from `loraplane.inference_worker.errors` (its
gRPC layer and control-stream client map them to status and command error codes); the control plane
turns them into its own `InvalidArgumentError` / `SourceNotFoundError`. Messages are written for a
person: what was wrong and what to do about it.
"""

from __future__ import annotations


class AdapterLoadError(Exception):
    """An adapter cannot be loaded: bad config, unsupported feature, shapes that do not fit.

    `field` names the offending adapter_config key (or "weights", "source", "version", ...), so callers
    can map the error to a precise code without parsing the message.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class AdapterSourceNotFoundError(AdapterLoadError):
    """The adapter's source (path or hub id) holds no adapter."""
