"""Server interceptors: bearer-token auth and the control plane's table of domain errors -> status codes.

Auth policy: with an admin token configured, CreateAdapter and DeleteAdapter need
`authorization: Bearer <admin token>`; reads (Get/List adapters, ListWorkers) stay open so gateways can
route without the admin secret. With a worker token configured, WorkerControl.Connect needs
`authorization: Bearer <worker token>` (the config requires one beyond loopback; `serve` and `up` make
one per run). Health and reflection are always open. Missing or wrong tokens get UNAUTHENTICATED;
tokens are compared in constant time and never logged.

Errors: `error_interceptor()` is the shared `loraplane.grpc_errors.ErrorInterceptor` with
`STATUS_BY_ERROR`; anything unlisted becomes INTERNAL with a generic message and a logged traceback.

Undecodable requests get INVALID_ARGUMENT from the shared `loraplane.grpc_errors.DecodeInterceptor`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from grpc_interceptor import AsyncServerInterceptor

from loraplane.control_plane import errors
from loraplane.control_plane.fleet import WorkerIdInUseError
from loraplane.grpc_errors import ErrorInterceptor

REGISTRY_SERVICE = "loraplane.registry.v1.AdapterRegistry"
WORKER_SERVICE = "loraplane.worker.v1.WorkerControl"
ADMIN_METHODS = frozenset(f"/{REGISTRY_SERVICE}/{m}" for m in ("CreateAdapter", "DeleteAdapter"))
WORKER_PREFIX = f"/{WORKER_SERVICE}/"

# Most specific first: the first matching class wins.
STATUS_BY_ERROR: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (errors.InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.AdapterNotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.SourceNotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.AdapterExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (WorkerIdInUseError, grpc.StatusCode.ALREADY_EXISTS),
    (errors.RequestIdConflictError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ModelNameClashError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.RolloutRejectedError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ServiceUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (errors.AuthenticationError, grpc.StatusCode.UNAUTHENTICATED),
    # A domain error not listed above: its message is still written for the caller.
    (errors.ControlPlaneError, grpc.StatusCode.INTERNAL),
)


def error_interceptor() -> ErrorInterceptor:
    """The shared error interceptor with the control plane's table."""
    return ErrorInterceptor(STATUS_BY_ERROR, "the control plane's log")


class AuthInterceptor(AsyncServerInterceptor):
    """Checks bearer tokens per the policy in the module docstring."""

    def __init__(self, admin_token: str, worker_token: str) -> None:
        self._admin = admin_token.encode()
        self._worker = worker_token.encode()

    def _required(self, method: str) -> tuple[bytes, str]:
        if method in ADMIN_METHODS and self._admin:
            return self._admin, "the admin token (LORAPLANE_ADMIN_TOKEN or the CLI's --admin-token-file)"
        if method.startswith(WORKER_PREFIX) and self._worker:
            return self._worker, "the worker token (LORAPLANE_WORKER_TOKEN in the worker's environment)"
        return b"", ""

    async def intercept(
        self, method: Callable, request_or_iterator: Any, context: grpc.aio.ServicerContext, method_name: str
    ) -> Any:
        token, what = self._required(method_name)
        if token and not _authorized(context.invocation_metadata(), token):
            message = f"{method_name} needs {what} in the authorization header"
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        return await super().intercept(method, request_or_iterator, context, method_name)


def _authorized(metadata, token: bytes) -> bool:
    values: Mapping[str, str] = dict(metadata or ())
    header = values.get("authorization", "")
    if not isinstance(header, str) or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), token)
