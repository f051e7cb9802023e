"""gRPC status -> OpenAI error mapping (the one place it happens), and what error bodies may not carry."""

from __future__ import annotations

import grpc
import httpx
import pytest

from loraplane.gateway.errors import OpenAIError, from_grpc


class FakeRpcError(Exception):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


@pytest.mark.parametrize(
    ("code", "status"),
    [("INVALID_ARGUMENT", 400), ("NOT_FOUND", 404), ("RESOURCE_EXHAUSTED", 429), ("UNAUTHENTICATED", 401)],
)
def test_client_errors_keep_the_upstream_message(code, status):
    error = from_grpc(FakeRpcError(getattr(grpc.StatusCode, code), "why"))
    assert isinstance(error, OpenAIError) and error.status == status
    assert error.body()["error"]["message"] == "why" and error.body()["error"]["code"] == status


# What the probe found in 5xx bodies: grpc core's connect errors, worker exception texts, server paths.
LEAKY = [
    ("UNAVAILABLE", 503, "failed to connect to all addresses; last error: ipv4:10.1.2.3:50061", "10.1.2.3"),
    ("UNAVAILABLE", 503, "the engine loop stopped: list index out of range (IndexError)", "IndexError"),
    ("UNKNOWN", 500, "Unexpected <class 'KeyError'>: 'lora_a'", "KeyError"),
    ("INTERNAL", 500, "cannot read /srv/loraplane/adapters/a/adapter_config.json", "/srv/loraplane"),
    ("DEADLINE_EXCEEDED", 504, "Deadline Exceeded at 10.1.2.3:50051", "10.1.2.3"),
    ("DATA_LOSS", 500, "sqlite3.OperationalError at /var/lib/loraplane", "sqlite3"),
]  # fmt: skip


@pytest.mark.parametrize(("code", "status", "details", "secret"), LEAKY)
def test_server_errors_get_a_generic_message_and_log_the_details(caplog, code, status, details, secret):
    error = from_grpc(FakeRpcError(getattr(grpc.StatusCode, code), details))
    assert error.status == status and secret not in str(error.body())
    assert error.message and error.param is None
    assert details in caplog.text


def test_message_over_the_grpc_size_limit_is_413():
    error = from_grpc(
        FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "CLIENT: Sent message larger than max (9 vs. 8)")
    )
    assert error.status == 413 and error.body()["error"]["type"] == "RequestTooLargeError"


def test_messages_quoting_unpaired_surrogates_stay_encodable():
    error = OpenAIError(404, "The model `\ud800` does not exist.", "model")
    assert error.message.encode("utf-8") and "\\ud800" in error.message


@pytest.mark.asyncio(loop_scope="session")
async def test_unexpected_gateway_exception_body_names_no_type_or_text(stack, monkeypatch):
    pool = stack.gateway.server.config.app.state.gateway.pool

    async def broken():
        raise KeyError("/srv/secret/path")

    monkeypatch.setattr(pool, "list_models", broken)
    async with httpx.AsyncClient(base_url=stack.gateway.url) as client:
        reply = await client.get("/v1/models")
    error = reply.json()["error"]
    assert reply.status_code == 500 and error["type"] == "InternalServerError"
    assert "KeyError" not in error["message"] and "/srv/secret" not in error["message"]


@pytest.mark.asyncio(loop_scope="session")
async def test_worker_lost_mid_stream_names_no_worker(stack):
    """Static workers are known by HOST:PORT; a 503 must not hand that address to the client."""
    from loraplane.gateway.generation import GenerationStream

    class Gone:
        async def read(self):
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, None, None, "connection reset by 10.9.8.7"
            )

        def cancel(self):
            pass

    pool = stack.gateway.server.config.app.state.gateway.pool
    worker = next(iter(pool.workers.values()))
    worker.in_flight += 1
    stream = GenerationStream(worker, Gone(), None, pool)
    with pytest.raises(OpenAIError) as info:
        async for _ in stream:
            pass
    worker.down_until = 0.0
    assert info.value.status == 503
    assert worker.endpoint not in info.value.message and "10.9.8.7" not in info.value.message
