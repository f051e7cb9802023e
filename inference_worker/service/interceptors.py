"""The worker's table of domain errors -> gRPC status codes, served by the shared interceptor.

`error_interceptor()` is `loraplane.grpc_errors.ErrorInterceptor` with `STATUS_BY_ERROR`: a
`loraplane.inference_worker.errors` exception becomes its status code with the exception's message
(written for a person); anything else is logged with its traceback and becomes INTERNAL with a short
message, so no traceback or internal text reaches a client.
"""

from __future__ import annotations

import grpc

from loraplane import grpc_errors
from loraplane.inference_worker import errors

LOG_NAME = "the worker's log"

# Most specific first: the first matching class wins.
STATUS_BY_ERROR: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (errors.InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ModelNotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.AdapterAlreadyLoadedError, grpc.StatusCode.ALREADY_EXISTS),
    (errors.AdapterSourceNotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.AdapterLoadError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ModelLoadError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.EngineOverloadedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.EngineDeadError, grpc.StatusCode.UNAVAILABLE),
    # A domain error not listed above: its message is still written for the caller.
    *((error_type, grpc.StatusCode.INTERNAL) for error_type in errors.DOMAIN_ERRORS),
)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and client-facing message for an exception raised while handling an RPC."""
    return grpc_errors.status_for(STATUS_BY_ERROR, exc, LOG_NAME)


def error_interceptor() -> grpc_errors.ErrorInterceptor:
    """The shared error interceptor with the worker's table."""
    return grpc_errors.ErrorInterceptor(STATUS_BY_ERROR, LOG_NAME)
