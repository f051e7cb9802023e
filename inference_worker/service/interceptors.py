"""The one place where the worker's domain errors become gRPC status codes.

`ErrorMappingInterceptor` wraps every handler of the worker's server: an `loraplane.inference_worker.errors`
exception becomes its status code with the exception's message (written for a person); anything else is
logged with its traceback and becomes INTERNAL with a short message, so no traceback reaches a client.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from loraplane.inference_worker import errors

logger = logging.getLogger(__name__)

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
)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and client-facing message for an exception raised while handling an RPC."""
    for error_type, code in STATUS_BY_ERROR:
        if isinstance(exc, error_type):
            return code, str(exc) or error_type.__name__
    if isinstance(exc, errors.DOMAIN_ERRORS):
        return grpc.StatusCode.INTERNAL, str(exc) or type(exc).__name__
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the worker's log"


async def _abort(context: grpc.aio.ServicerContext, exc: Exception, method: str) -> None:
    code, message = status_for(exc)
    if code == grpc.StatusCode.INTERNAL:
        logger.error("%s failed", method, exc_info=exc)
    else:
        logger.info("%s: %s %s", method, code.name, message)
    await context.abort(code, message)


def _passes_through(exc: BaseException) -> bool:
    """Exceptions that are already a status (abort) or a cancellation must not be remapped."""
    return isinstance(exc, (asyncio.CancelledError, grpc.aio.AbortError, grpc.aio.BaseError))


def _wrap_unary(
    behavior: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], method: str
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(request, context)
        except Exception as exc:
            if _passes_through(exc):
                raise
            await _abort(context, exc, method)

    return handler


def _wrap_stream(
    behavior: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]], method: str
) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for response in behavior(request, context):
                yield response
        except Exception as exc:
            if _passes_through(exc):
                raise
            await _abort(context, exc, method)

    return handler


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Maps domain errors of unary-unary and unary-stream handlers to status codes (see module doc)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        serde = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if inspect.iscoroutinefunction(handler.unary_unary):
            return grpc.unary_unary_rpc_method_handler(_wrap_unary(handler.unary_unary, method), **serde)
        if inspect.isasyncgenfunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(_wrap_stream(handler.unary_stream, method), **serde)
        return handler
