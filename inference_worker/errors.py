"""Domain errors of the inference worker.

The engine, the LoRA manager and the loaders raise these; the gRPC layer maps them to status codes in
one place and the gateway maps them to OpenAI error objects. Messages are written for a person: they
say what was wrong and what to do about it.

The adapter-format errors (`AdapterLoadError`, `AdapterSourceNotFoundError`) live in the torch-free
`loraplane.adapter_format.errors`, shared with the control plane, and are re-exported here. They cannot
derive from `EngineError`, so code that reports any domain error as is checks `DOMAIN_ERRORS`.
"""

from __future__ import annotations

from loraplane.adapter_format.errors import AdapterLoadError, AdapterSourceNotFoundError

__all__ = [
    "DOMAIN_ERRORS",
    "AdapterAlreadyLoadedError",
    "AdapterLoadError",
    "AdapterNotFoundError",
    "AdapterSourceNotFoundError",
    "EngineDeadError",
    "EngineError",
    "EngineOverloadedError",
    "InvalidRequestError",
    "ModelLoadError",
    "ModelNotFoundError",
    "RequestFailedError",
]


class EngineError(Exception):
    """Base class for every error the engine reports to a caller."""


class InvalidRequestError(EngineError):
    """A request that can never succeed as written (bad sampling values, empty prompt, too long)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ModelNotFoundError(EngineError):
    """A request names a model or adapter this worker does not serve."""


class AdapterNotFoundError(ModelNotFoundError):
    """The adapter name is not loaded (or was unloaded)."""


class AdapterAlreadyLoadedError(EngineError):
    """An adapter with this name is already loaded with different weights."""


class ModelLoadError(EngineError):
    """The base model cannot be loaded (unknown path, a folder with no model, unsupported architecture)."""


class EngineOverloadedError(EngineError):
    """The request queue is full; the caller should retry later."""


class RequestFailedError(EngineError):
    """Processing one request's outputs failed (a stop check, detokenization, logprobs): that request
    ends with this error, the engine and every other request go on. The cause is in the worker's log."""


class EngineDeadError(EngineError):
    """The engine loop has stopped; nothing more can be served."""


# Every error whose message is written for the caller: the engine's and the adapter format's.
DOMAIN_ERRORS: tuple[type[Exception], ...] = (EngineError, AdapterLoadError)
