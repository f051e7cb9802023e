"""The API key (vLLM's --api-key): 401 on every OpenAI route without it, probes and scrapers stay open.

Against fake workers on loopback and the gateway served in the test's loop; the official `openai` client.
"""

from __future__ import annotations

import argparse
import logging

import httpx
import pytest
import pytest_asyncio

from loraplane.gateway.auth import api_key_from
from loraplane.gateway.config import GatewayConfig
from loraplane.gateway.server import BackgroundGateway
from loraplane.gateway.testing import start_fake_worker

pytestmark = pytest.mark.asyncio(loop_scope="session")
openai = pytest.importorskip("openai")

KEY = "sk-test-key-0123"
PROTECTED = [
    ("POST", "/v1/completions", {"model": "fake-base", "prompt": "a b", "max_tokens": 2}),
    ("POST", "/v1/chat/completions", {"model": "fake-base", "messages": [{"role": "user", "content": "x"}]}),
    ("GET", "/v1/models", None),
    ("POST", "/tokenize", {"model": "fake-base", "prompt": "a b"}),
    ("POST", "/detokenize", {"model": "fake-base", "tokens": [1]}),
    ("GET", "/v1/no-such-route", None),
]
OPEN = ["/health", "/metrics", "/ping", "/version", "/openapi.json"]


@pytest_asyncio.fixture(scope="module")
async def keyed():
    server, _, port = await start_fake_worker(adapters={"sql-lora"})
    gateway = BackgroundGateway(
        GatewayConfig(host="127.0.0.1", port=0, workers=(f"127.0.0.1:{port}",), api_key=KEY)
    )
    await gateway.start()
    yield gateway
    await gateway.stop()
    await server.stop(None)


async def test_the_openai_client_with_the_key_is_served(keyed):
    client = openai.AsyncOpenAI(base_url=f"{keyed.url}/v1", api_key=KEY, max_retries=0)
    models = await client.models.list()
    assert {m.id for m in models.data} == {"fake-base", "sql-lora"}
    completion = await client.completions.create(model="sql-lora", prompt="a b", max_tokens=2)
    assert completion.choices[0].text


@pytest.mark.parametrize("key", ["wrong", KEY + "x", KEY[:-1]])
async def test_the_openai_client_with_a_wrong_key_gets_401(keyed, key):
    client = openai.AsyncOpenAI(base_url=f"{keyed.url}/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        await client.chat.completions.create(model="fake-base", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        await client.models.list()


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {KEY}", KEY])
async def test_every_openai_route_needs_the_key(keyed, method, path, body, header):
    headers = {"authorization": header} if header else {}
    async with httpx.AsyncClient(base_url=keyed.url) as client:
        response = await client.request(method, path, json=body, headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == 401 and error["type"] == "AuthenticationError"
    assert ("Missing" if header in (None, f"Basic {KEY}", KEY) else "Incorrect") in error["message"]
    assert KEY not in response.text


@pytest.mark.parametrize("path", OPEN)
async def test_probes_and_scrapers_need_no_key(keyed, path):
    async with httpx.AsyncClient(base_url=keyed.url) as client:
        response = await client.get(path)
    assert response.status_code == 200, response.text


def _args(**values) -> argparse.Namespace:
    return argparse.Namespace(**{"api_key": None, "api_key_file": None, **values})


def test_the_key_comes_from_a_file_the_argument_or_the_environment(tmp_path, caplog):
    path = tmp_path / "key"
    path.write_text(f"{KEY}\n")
    env = {"LORAPLANE_API_KEY": "from-env", "VLLM_API_KEY": "from-vllm-env"}
    assert api_key_from(_args(api_key_file=str(path), api_key="arg"), env) == KEY
    with caplog.at_level(logging.WARNING):
        assert api_key_from(_args(api_key="arg"), env) == "arg"
    assert "visible to every local user" in caplog.text
    assert api_key_from(_args(), env) == "from-env"
    assert api_key_from(_args(), {"VLLM_API_KEY": "from-vllm-env"}) == "from-vllm-env"
    assert api_key_from(_args(), {}) is None


@pytest.mark.parametrize("content", [None, ""])
def test_a_missing_or_empty_key_file_is_refused_by_name(tmp_path, content):
    path = tmp_path / "key"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match="--api-key-file"):
        api_key_from(_args(api_key_file=str(path)), {})


def test_the_config_reads_the_vllm_variable_and_keeps_the_key_out_of_its_repr(monkeypatch):
    monkeypatch.delenv("LORAPLANE_API_KEY", raising=False)
    monkeypatch.setenv("VLLM_API_KEY", KEY)
    config = GatewayConfig.from_env(workers=("127.0.0.1:1",))
    assert config.api_key == KEY and KEY not in repr(config)
