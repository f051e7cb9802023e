"""Request bodies over --max-request-bytes get 413 before they are parsed, with or without Content-Length."""

from __future__ import annotations

import json

import httpx
import pytest
import pytest_asyncio

from loraplane.gateway.config import DEFAULT_MAX_REQUEST_BYTES, GatewayConfig
from loraplane.gateway.server import BackgroundGateway
from loraplane.gateway.testing import start_fake_worker

pytestmark = pytest.mark.asyncio(loop_scope="session")

LIMIT = 64 * 1024


@pytest_asyncio.fixture(scope="module")
async def small_limit():
    server, _, port = await start_fake_worker()
    config = GatewayConfig(host="127.0.0.1", port=0, workers=(f"127.0.0.1:{port}",), max_request_bytes=LIMIT)
    gateway = BackgroundGateway(config)
    await gateway.start()
    yield gateway
    await gateway.stop()
    await server.stop(None)


def completion_body(size: int) -> bytes:
    """A valid completion body of exactly `size` bytes."""
    head = json.dumps({"model": "fake-base", "max_tokens": 1, "prompt": ""}).encode()
    return head[:-2] + b"a" * (size - len(head)) + head[-2:]


def chunks(body: bytes, size: int = 8192):
    """The body as a stream of unknown length (sent chunked, without Content-Length)."""

    async def stream():
        for start in range(0, len(body), size):
            yield body[start : start + size]

    return stream()


def assert_too_large(reply: httpx.Response, limit: int) -> None:
    assert reply.status_code == 413, reply.text
    error = reply.json()["error"]
    assert error["code"] == 413 and str(limit) in error["message"], error


@pytest.mark.parametrize("chunked", [False, True])
async def test_body_at_the_limit_is_served(small_limit, chunked):
    body = completion_body(LIMIT)
    async with httpx.AsyncClient(base_url=small_limit.url, timeout=30) as client:
        content = chunks(body) if chunked else body
        reply = await client.post(
            "/v1/completions", content=content, headers={"content-type": "application/json"}
        )
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize("chunked", [False, True])
async def test_body_over_the_limit_is_413(small_limit, chunked):
    body = completion_body(LIMIT + 1)
    async with httpx.AsyncClient(base_url=small_limit.url, timeout=30) as client:
        content = chunks(body) if chunked else body
        reply = await client.post(
            "/v1/completions", content=content, headers={"content-type": "application/json"}
        )
        assert_too_large(reply, LIMIT)
        metrics = (await client.get("/metrics")).text
    assert 'loraplane_gateway_requests_total{endpoint="/v1/completions",status="413"}' in metrics


async def test_not_json_over_the_limit_is_413_not_400(small_limit):
    async with httpx.AsyncClient(base_url=small_limit.url, timeout=30) as client:
        reply = await client.post("/v1/chat/completions", content=b"{" * (LIMIT + 1))
    assert_too_large(reply, LIMIT)


@pytest.mark.parametrize("chunked", [False, True])
async def test_default_limit_refuses_20_mib_with_413_not_429(stack, chunked):
    """20 MiB used to reach the worker's gRPC message limit and come back as 429 (a rate-limit code)."""
    body = completion_body(20 * 1024 * 1024)
    async with httpx.AsyncClient(base_url=stack.gateway.url, timeout=60) as client:
        content = chunks(body, 1024 * 1024) if chunked else body
        reply = await client.post(
            "/v1/completions", content=content, headers={"content-type": "application/json"}
        )
    assert_too_large(reply, DEFAULT_MAX_REQUEST_BYTES)
