"""The gateway's /metrics, scraped with prometheus_client's parser: its time to first token is the
client's (from the request's arrival, through the worker's prefill), streamed and not."""

from __future__ import annotations

import json
import time

import httpx
import pytest_asyncio

from loraplane.gateway.config import GatewayConfig
from loraplane.gateway.server import BackgroundGateway
from loraplane.gateway.testing import start_fake_worker
from tests.loraplane.prometheus_scrape import parse, value

PREFILL_S = 0.4  # the fake worker's prefill: it sends `start` (with the first token) after this
TOKEN_S = 0.02
TTFT = "loraplane_gateway_time_to_first_token_seconds"


@pytest_asyncio.fixture(scope="module")
async def gateway():
    server, servicer, port = await start_fake_worker(adapters={"sql-lora"}, token_delay_s=TOKEN_S)
    servicer.prefill_delay_s = PREFILL_S
    gateway = BackgroundGateway(GatewayConfig(host="127.0.0.1", port=0, workers=(f"127.0.0.1:{port}",)))
    await gateway.start()
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        yield client
    await gateway.stop()
    await server.stop(None)


async def scrape(client: httpx.AsyncClient):
    response = await client.get("/metrics")
    assert response.status_code == 200
    return parse(response.text)


async def streamed_ttft(client: httpx.AsyncClient, body: dict) -> float:
    """Seconds from sending the request to the first SSE event with generated text, as the client sees."""
    sent = time.perf_counter()
    async with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        first = None
        async for line in response.aiter_lines():  # read to the end, so the request is finished
            if first is None and line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
                first = time.perf_counter()
    return first - sent


async def test_ttft_is_the_clients_streamed_and_not(gateway):
    body = {"model": "sql-lora", "prompt": "hello there", "max_tokens": 3}
    before = await scrape(gateway)
    client_ttft = await streamed_ttft(gateway, body)
    after = await scrape(gateway)
    assert value(after, TTFT + "_count") - value(before, TTFT + "_count") == 1
    server_ttft = value(after, TTFT + "_sum") - value(before, TTFT + "_sum")
    assert server_ttft >= PREFILL_S
    assert abs(server_ttft - client_ttft) <= 0.1 * client_ttft, (server_ttft, client_ttft)
    assert (
        value(after, "loraplane_gateway_inter_token_latency_seconds_count")
        - value(before, "loraplane_gateway_inter_token_latency_seconds_count")
        == 2
    )

    sent = time.perf_counter()
    response = await gateway.post("/v1/completions", json=body)
    client_ttft = time.perf_counter() - sent  # a plain response: its body is the first content
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] == 3
    final = await scrape(gateway)
    server_ttft = value(final, TTFT + "_sum") - value(after, TTFT + "_sum")
    assert server_ttft >= PREFILL_S + 2 * TOKEN_S
    assert abs(server_ttft - client_ttft) <= 0.1 * client_ttft, (server_ttft, client_ttft)
    e2e = "loraplane_gateway_request_latency_seconds_sum"
    assert value(final, e2e) - value(after, e2e) >= server_ttft
    assert value(final, "loraplane_gateway_adapter_requests_total", adapter="sql-lora") == 2
    assert value(final, "loraplane_gateway_generation_tokens_total") == 6
