"""The one server interceptor that turns a component's domain errors into gRPC status codes.

Semantics: each component passes its table of (exception class, status code), most specific class
first. A handler that raises an instance of a listed class (before its first response or mid-stream)
aborts with that code and the exception's message, which is written for a person. Anything else is
unexpected: its traceback is logged and the call aborts with INTERNAL and a generic message that names
only the exception's class (never UNKNOWN, never the exception's text, which may hold internals); a bare
`NotImplementedError` (a generated base servicer's stub) gives UNIMPLEMENTED. A status set by the
handler itself (`context.abort`) and a cancellation pass through unchanged. Every handler shape
(unary/stream request x unary/stream response) is covered.

Built on the `grpc-interceptor` package rather than our own wrapper: its `AsyncServerInterceptor`
rebuilds a handler of the same shape around one `intercept` method, and its
`AsyncExceptionToStatusInterceptor` already catches errors raised before the first response and
mid-stream; overriding the documented `handle_exception` hook is all the mapping needs. Its default for
unlisted exceptions (`repr(ex)` as the message) would leak the exception's text, so `handle_exception`
here replaces it. Our domain errors stay transport-free: they do not derive from the package's
`GrpcException`. The control plane's token check builds on the same `AsyncServerInterceptor` base
(`loraplane.control_plane.interceptors.AuthInterceptor`), so no component wraps handlers by hand.

Undecodable requests: grpc-core parses a request before any handler or interceptor runs, and a
deserializer that raises makes it answer UNKNOWN with the exception's class and text. `DecodeInterceptor`
wraps every method's deserializer so that bytes that are not the method's message become an
`UndecodableRequest`, answered with INVALID_ARGUMENT: a unary request at once, a streamed one when the
handler reads that message (`UndecodableMessageError`, which every `ErrorInterceptor` maps first).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError
from grpc_interceptor import AsyncServerInterceptor
from grpc_interceptor.exception_to_status import AsyncExceptionToStatusInterceptor

logger = logging.getLogger(__name__)

StatusTable = Sequence[tuple[type[BaseException], grpc.StatusCode]]


def status_for(table: StatusTable, exc: BaseException, log_name: str) -> tuple[grpc.StatusCode, str]:
    """The status code and client-facing message for `exc`: its table entry, else a generic INTERNAL.

    `log_name` says whose log holds the traceback ("the worker's log", ...)."""
    if isinstance(exc, UndecodableMessageError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if type(exc) is NotImplementedError:
        # What a generated base servicer raises for a method the server does not implement (grpcio's
        # aio HealthServicer leaves Health.List so): the method is unimplemented, not broken.
        return grpc.StatusCode.UNIMPLEMENTED, "this server does not implement the method"
    for error_type, code in table:
        if isinstance(exc, error_type):
            return code, str(exc) or error_type.__name__
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see {log_name}"


class ErrorInterceptor(AsyncExceptionToStatusInterceptor):
    """Maps the exceptions of every handler through `table` (see the module docstring)."""

    def __init__(self, table: StatusTable, log_name: str) -> None:
        super().__init__()
        self.table = tuple(table)
        self.log_name = log_name

    async def handle_exception(
        self, ex: Exception, request_or_iterator: Any, context: grpc.aio.ServicerContext, method_name: str
    ) -> NoReturn:
        if isinstance(ex, grpc.aio.AbortError):
            raise ex  # the handler set its own status
        code, message = status_for(self.table, ex, self.log_name)
        if code == grpc.StatusCode.INTERNAL:
            logger.error("%s failed", method_name, exc_info=ex)
        else:
            logger.info("%s -> %s: %s", method_name, code.name, message)
        await context.abort(code, message)
        raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


class UndecodableMessageError(ValueError):
    """A streamed request message whose bytes did not parse (INVALID_ARGUMENT on every server)."""


class UndecodableRequest:
    """Stands in for a request message whose bytes did not parse; `error` says why."""

    def __init__(self, error: str) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return UndecodableRequest(str(exc) or "the bytes are not a protobuf message")

    return deserialize


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, UndecodableRequest):
            raise UndecodableMessageError(f"a streamed message could not be parsed: {request.error}")
        yield request


class DecodeInterceptor(AsyncServerInterceptor):
    """INVALID_ARGUMENT, not UNKNOWN, for request bytes that do not parse (see the module docstring).

    Install it outside the error interceptor, which maps a streamed message's failure."""

    async def intercept_service(self, continuation, handler_call_details):
        async def tolerant_continuation(details):
            handler = await continuation(details)
            if handler is None or handler.request_deserializer is None:
                return handler
            return handler._replace(request_deserializer=_tolerant(handler.request_deserializer))

        return await super().intercept_service(tolerant_continuation, handler_call_details)

    async def intercept(
        self, method: Callable, request_or_iterator: Any, context: grpc.aio.ServicerContext, method_name: str
    ) -> Any:
        if isinstance(request_or_iterator, UndecodableRequest):
            message = f"the request could not be parsed: {request_or_iterator.error}"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        if hasattr(request_or_iterator, "__aiter__"):
            request_or_iterator = _checked(request_or_iterator)
        return await super().intercept(method, request_or_iterator, context, method_name)
