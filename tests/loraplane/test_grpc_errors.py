"""The shared error interceptor over a real grpc.aio server on loopback, for every handler shape: a domain
error gives its code and message, anything else INTERNAL with a generic message and a logged traceback,
also mid-stream; a handler's own abort passes through."""

from __future__ import annotations

import logging

import grpc
import pytest

from loraplane.grpc_errors import ErrorInterceptor, status_for


class BadNameError(Exception):
    """A domain error whose message is written for the caller."""


class MissingError(Exception):
    """Another domain error."""


class NoSuchNameError(MissingError):
    """A subclass listed before its base."""


TABLE = (
    (NoSuchNameError, grpc.StatusCode.NOT_FOUND),
    (BadNameError, grpc.StatusCode.INVALID_ARGUMENT),
    (MissingError, grpc.StatusCode.FAILED_PRECONDITION),
)
SERVICE = "test.v1.Echo"


def fail(kind: str) -> None:
    if kind == "domain":
        raise BadNameError("bad name: use letters and digits")
    if kind == "unexpected":
        raise KeyError("secret internals")


async def unary_unary(request: bytes, context) -> bytes:
    if request == b"abort":
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "handler's own status")
    fail(request.decode())
    return request


async def unary_stream(request: bytes, context):
    yield b"first"
    if request == b"abort":
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "handler's own status")
    fail(request.decode())
    yield b"never"


async def stream_unary(requests, context) -> bytes:
    async for request in requests:
        fail(request.decode())
    return b"done"


async def stream_stream(requests, context):
    async for request in requests:
        yield b"echo"
        fail(request.decode())


HANDLERS = {
    "UnaryUnary": grpc.unary_unary_rpc_method_handler(unary_unary),
    "UnaryStream": grpc.unary_stream_rpc_method_handler(unary_stream),
    "StreamUnary": grpc.stream_unary_rpc_method_handler(stream_unary),
    "StreamStream": grpc.stream_stream_rpc_method_handler(stream_stream),
}


@pytest.fixture
async def channel():
    server = grpc.aio.server(interceptors=[ErrorInterceptor(TABLE, "the test server's log")])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan
    await server.stop(0)


async def call(chan: grpc.aio.Channel, method: str, payload: bytes) -> list[bytes]:
    """Every response the call gives before it ends; raises AioRpcError on a failed status."""
    path = f"/{SERVICE}/{method}"
    if method == "UnaryUnary":
        return [await chan.unary_unary(path)(payload)]
    if method == "UnaryStream":
        return [r async for r in chan.unary_stream(path)(payload)]
    if method == "StreamUnary":
        return [await chan.stream_unary(path)(iter([b"ok", payload]))]
    return [r async for r in chan.stream_stream(path)(iter([payload]))]


SHAPES = list(HANDLERS)


@pytest.mark.parametrize("method", SHAPES)
async def test_domain_error_gives_its_code_and_message(channel, method, caplog):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(channel, method, b"domain")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "bad name: use letters and digits"
    assert not any(r.exc_info for r in caplog.records), "an expected error logs no traceback"


@pytest.mark.parametrize("method", SHAPES)
async def test_unexpected_error_is_internal_with_generic_text_and_logged_traceback(channel, method, caplog):
    caplog.set_level(logging.ERROR, logger="loraplane.grpc_errors")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(channel, method, b"unexpected")
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == "internal error (KeyError); see the test server's log"
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1 and method in logged[0].getMessage()
    assert logged[0].exc_info[0] is KeyError


@pytest.mark.parametrize(("method", "payload"), [("UnaryStream", b"domain"), ("StreamStream", b"unexpected")])
async def test_mid_stream_errors_end_the_stream_after_what_was_sent(channel, method, payload):
    path = f"/{SERVICE}/{method}"
    stream = (
        channel.unary_stream(path)(payload)
        if method == "UnaryStream"
        else channel.stream_stream(path)(iter([payload]))
    )
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for response in stream:
            received.append(response)
    assert len(received) == 1
    assert info.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL)
    assert "secret" not in info.value.details()


@pytest.mark.parametrize("method", ["UnaryUnary", "UnaryStream"])
async def test_handler_abort_passes_through(channel, method):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(channel, method, b"abort")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert info.value.details() == "handler's own status"


async def test_success_is_untouched(channel):
    assert await call(channel, "StreamUnary", b"ok") == [b"done"]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NoSuchNameError("no such name"), grpc.StatusCode.NOT_FOUND),
        (MissingError("missing"), grpc.StatusCode.FAILED_PRECONDITION),
        (BadNameError(""), grpc.StatusCode.INVALID_ARGUMENT),
        (RuntimeError("secret"), grpc.StatusCode.INTERNAL),
        (NotImplementedError("Method not implemented!"), grpc.StatusCode.UNIMPLEMENTED),
    ],
)
def test_status_for_takes_the_first_matching_entry(error, code):
    mapped, message = status_for(TABLE, error, "its log")
    assert mapped == code and "secret" not in message and message


async def test_a_method_the_servicer_leaves_unimplemented_is_unimplemented_not_internal():
    """grpcio's aio HealthServicer inherits Health.List from the generated base, which raises
    NotImplementedError: found by the fuzz suite as INTERNAL on every server."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.aio.server(interceptors=[ErrorInterceptor(TABLE, "the test server's log")])
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await health_pb2_grpc.HealthStub(chan).List(health_pb2.HealthListRequest())
    finally:
        await server.stop(0)
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
