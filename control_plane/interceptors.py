"""Server interceptors: bearer-token auth and the one place domain errors become status codes.

Auth policy: with an admin token configured, CreateAdapter and DeleteAdapter need
`authorization: Bearer <admin token>`; reads (Get/List adapters, ListWorkers) stay open so gateways can
route without the admin secret. With a worker token configured, WorkerControl.Connect needs
`authorization: Bearer <worker token>`. Health and reflection are always open. Missing or wrong
tokens get UNAUTHENTICATED; tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping

import grpc
from loraplane.control_plane.errors import ControlPlaneError, status_code

logger = logging.getLogger(__name__)

REGISTRY_SERVICE = "loraplane.registry.v1.AdapterRegistry"
WORKER_SERVICE = "loraplane.worker.v1.WorkerControl"
ADMIN_METHODS = frozenset(f"/{REGISTRY_SERVICE}/{m}" for m in ("CreateAdapter", "DeleteAdapter"))
WORKER_PREFIX = f"/{WORKER_SERVICE}/"


def _wrap(handler: grpc.RpcMethodHandler, unary: Callable, streaming: Callable) -> grpc.RpcMethodHandler:
    """A handler of the same streaming shape whose behaviour is replaced by `unary` or `streaming`."""
    ser = dict(
        request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **ser)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **ser)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), **ser)
    return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), **ser)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks bearer tokens per the policy in the module docstring."""

    def __init__(self, admin_token: str, worker_token: str) -> None:
        self._admin = admin_token.encode()
        self._worker = worker_token.encode()

    def _required(self, method: str) -> tuple[bytes, str]:
        if method in ADMIN_METHODS and self._admin:
            return self._admin, "an admin token (--admin-token or LORAPLANE_ADMIN_TOKEN)"
        if method.startswith(WORKER_PREFIX) and self._worker:
            return self._worker, "the worker token"
        return b"", ""

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        token, what = self._required(details.method)
        handler = await continuation(details)
        if not token or handler is None or _authorized(details.invocation_metadata, token):
            return handler
        message = f"{details.method} needs {what} in the authorization header"

        def unary(_behaviour):
            async def deny(request, context):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

            return deny

        def streaming(_behaviour):
            async def deny(request, context):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
                yield  # pragma: no cover - makes this an async generator like the real handler

            return deny

        return _wrap(handler, unary, streaming)


def _authorized(metadata, token: bytes) -> bool:
    values: Mapping[str, str] = dict(metadata or ())
    header = values.get("authorization", "")
    if not isinstance(header, str) or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), token)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Aborts with the mapped status when a handler raises a ControlPlaneError; never leaks a traceback."""

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None:
            return None

        def unary(behaviour):
            async def guarded(request, context):
                try:
                    return await behaviour(request, context)
                except ControlPlaneError as exc:
                    await _abort(context, details.method, exc)

            return guarded

        def streaming(behaviour):
            async def guarded(request, context):
                try:
                    async for response in behaviour(request, context):
                        yield response
                except ControlPlaneError as exc:
                    await _abort(context, details.method, exc)

            return guarded

        return _wrap(handler, unary, streaming)


async def _abort(context: grpc.aio.ServicerContext, method: str, exc: ControlPlaneError) -> None:
    code = status_code(exc)
    logger.info("%s -> %s: %s", method, code.name, exc)
    await context.abort(code, str(exc))
