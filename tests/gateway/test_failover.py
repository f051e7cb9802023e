"""Worker failure: streams end with a clean error, new requests go to the remaining worker."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import openai
import pytest
import pytest_asyncio

from loraplane.gateway.config import GatewayConfig
from loraplane.gateway.server import BackgroundGateway
from loraplane.gateway.testing import start_fake_worker

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture
async def slow_pair():
    workers = [await start_fake_worker(adapters={"a"}, token_delay_s=0.02) for _ in range(2)]
    config = GatewayConfig(
        host="127.0.0.1",
        port=0,
        workers=tuple(f"127.0.0.1:{p}" for _, _, p in workers),
        refresh_interval_s=30,
        affinity_slack=1000,
    )
    gateway = BackgroundGateway(config)
    await gateway.start()
    yield gateway, workers
    await gateway.stop()
    for server, _, _ in workers:
        await server.stop(None)


async def test_killed_worker_stream_ends_with_error_and_traffic_moves(slow_pair):
    gateway, workers = slow_pair
    client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
    stream = await client.completions.create(model="a", prompt="p", max_tokens=200, stream=True)
    served_by = stream.response.headers["x-loraplane-worker"]
    victim = next(w for w in workers if served_by.endswith(f":{w[2]}"))
    received = 0
    with pytest.raises(openai.APIError, match="unavailable"):
        async for _ in stream:
            received += 1
            if received == 3:
                await victim[0].stop(None)
    assert received >= 3
    for _ in range(4):
        reply = await client.completions.with_raw_response.create(model="a", prompt="p", max_tokens=2)
        assert reply.headers["x-loraplane-worker"] != served_by


async def test_client_disconnect_cancels_worker_call(slow_pair):
    gateway, workers = slow_pair
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        body = {"model": "a", "prompt": "p", "max_tokens": 500, "stream": True}
        async with client.stream("POST", "/v1/completions", json=body) as reply:
            async for line in reply.aiter_lines():
                if line.startswith("data:"):
                    break
    pool = gateway.server.config.app.state.gateway.pool
    for _ in range(100):
        if all(w.in_flight == 0 for w in pool.workers.values()):
            break
        await asyncio.sleep(0.02)
    assert all(w.in_flight == 0 for w in pool.workers.values())


@pytest.mark.parametrize("code", ["UNAVAILABLE", "CANCELLED"])
async def test_worker_refusing_before_start_is_skipped(slow_pair, code):
    """A draining worker refuses with UNAVAILABLE; one whose shutdown races the call cancels it. Nothing
    was generated, so the request goes to the other worker and the client never sees the refusal."""
    gateway, workers = slow_pair
    client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
    reply = await client.completions.with_raw_response.create(model="a", prompt="p", max_tokens=2)
    chosen = reply.headers["x-loraplane-worker"]
    refusing, other = sorted(workers, key=lambda w: not chosen.endswith(f":{w[2]}"))
    refusing[1].refuse_with = grpc.StatusCode[code]
    for _ in range(4):
        reply = await client.completions.with_raw_response.create(model="a", prompt="p", max_tokens=2)
        assert reply.headers["x-loraplane-worker"].endswith(f":{other[2]}")
