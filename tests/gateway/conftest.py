"""Fixtures: fake Inference workers on loopback and a gateway served in the test's event loop."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import pytest_asyncio

from loraplane.gateway.config import GatewayConfig
from loraplane.gateway.server import BackgroundGateway
from loraplane.gateway.testing import FakeInference, start_fake_worker

ADAPTERS = {"sql-lora", "chat-lora"}


@dataclass
class Stack:
    gateway: BackgroundGateway
    workers: list[tuple[object, FakeInference, int]]

    @property
    def base_url(self) -> str:
        return f"{self.gateway.url}/v1"


@pytest_asyncio.fixture(scope="module")
async def stack():
    workers = [await start_fake_worker(adapters=ADAPTERS) for _ in range(2)]
    config = GatewayConfig(
        host="127.0.0.1", port=0, workers=tuple(f"127.0.0.1:{port}" for _, _, port in workers)
    )
    gateway = BackgroundGateway(config)
    await gateway.start()
    yield Stack(gateway, workers)
    await gateway.stop()
    for server, _, _ in workers:
        await server.stop(None)


@pytest.fixture
def openai_client(stack):
    openai = pytest.importorskip("openai")
    return openai.AsyncOpenAI(base_url=stack.base_url, api_key="unused", max_retries=0)
