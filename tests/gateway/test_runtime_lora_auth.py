"""The runtime LoRA routes act with the caller's credential only, against a real control plane.

With an admin token on the control plane, /v1/load_lora_adapter and /v1/unload_lora_adapter need the
caller's `Authorization: Bearer <admin token>`; the gateway never lends its own (even when
LORAPLANE_ADMIN_TOKEN is in its environment). Without one, anonymous calls stay allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from loraplane.control_plane.config import ControlPlaneConfig
from loraplane.control_plane.server import ControlPlaneServer
from loraplane.gateway.config import GatewayConfig
from loraplane.gateway.server import BackgroundGateway

pytestmark = pytest.mark.asyncio(loop_scope="session")

ADMIN_TOKEN = "gateway-test-admin-secret"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class Runtime:
    gateway: BackgroundGateway
    adapter_root: Path

    async def post(self, path: str, body: dict | bytes, headers: dict | None = None) -> httpx.Response:
        send = {"content": body} if isinstance(body, bytes) else {"json": body}
        headers = {"content-type": "application/json", **(headers or {})}
        async with httpx.AsyncClient(base_url=self.gateway.url, timeout=30) as client:
            return await client.post(path, headers=headers, **send)


async def start_runtime(tmp: Path, admin_token: str, monkeypatch) -> tuple[ControlPlaneServer, Runtime]:
    root = tmp / "adapters"
    root.mkdir()
    config = ControlPlaneConfig(
        listen="127.0.0.1:0", data_dir=tmp / "data", adapter_roots=(root,), admin_token=admin_token
    )
    control_plane = ControlPlaneServer(config)
    await control_plane.start()
    # The operator's token in the gateway's environment must not be lent to anonymous callers.
    monkeypatch.setenv("LORAPLANE_ADMIN_TOKEN", ADMIN_TOKEN)
    gateway_config = GatewayConfig.from_env(
        host="127.0.0.1",
        port=0,
        control_plane=f"127.0.0.1:{control_plane.port}",
        allow_runtime_lora_updating=True,
    )
    gateway = BackgroundGateway(gateway_config)
    await gateway.start()
    return control_plane, Runtime(gateway, root)


@pytest_asyncio.fixture(scope="module", params=["with-token", "open"])
async def runtime(request, tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    token = ADMIN_TOKEN if request.param == "with-token" else ""
    control_plane, runtime = await start_runtime(tmp_path_factory.mktemp("runtime"), token, monkeypatch)
    yield request.param, runtime
    await runtime.gateway.stop()
    await control_plane.stop()
    monkeypatch.undo()


BAD_CREDENTIALS = [
    {},
    {"authorization": "Bearer wrong-token"},
    {"authorization": f"Basic {ADMIN_TOKEN}"},
    {"authorization": "Bearer"},
]


def assert_unauthenticated(reply: httpx.Response) -> None:
    assert reply.status_code == 401, reply.text
    error = reply.json()["error"]
    assert error["code"] == 401 and error["type"] == "AuthenticationError", error
    assert "Authorization: Bearer" in error["message"] and ADMIN_TOKEN not in error["message"]


@pytest.mark.parametrize("headers", BAD_CREDENTIALS)
async def test_unload_needs_the_callers_admin_token(runtime, headers):
    mode, rt = runtime
    reply = await rt.post("/v1/unload_lora_adapter", {"lora_name": "operators-adapter"}, headers)
    if mode == "with-token":
        assert_unauthenticated(reply)
    else:
        assert reply.status_code == 404 and "cannot be found" in reply.json()["error"]["message"]


@pytest.mark.parametrize("headers", BAD_CREDENTIALS)
async def test_load_needs_the_callers_admin_token(runtime, headers):
    mode, rt = runtime
    body = {"lora_name": "x", "lora_path": str(rt.adapter_root / "missing")}
    reply = await rt.post("/v1/load_lora_adapter", body, headers)
    if mode == "with-token":
        assert_unauthenticated(reply)
    else:
        assert reply.status_code == 404, reply.text


async def test_the_admin_token_passes(runtime):
    _, rt = runtime
    unload = await rt.post("/v1/unload_lora_adapter", {"lora_name": "never-loaded"}, ADMIN)
    assert unload.status_code == 404 and "cannot be found" in unload.json()["error"]["message"]
    load = await rt.post(
        "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": str(rt.adapter_root / "no")}, ADMIN
    )
    assert load.status_code == 404 and "No adapter found" in load.json()["error"]["message"]


async def test_a_token_that_cannot_be_sent_is_401_not_500(runtime):
    mode, rt = runtime
    headers = {"authorization": "Bearer caf\u00e9".encode("latin-1")}
    async with httpx.AsyncClient(base_url=rt.gateway.url) as client:
        reply = await client.post("/v1/unload_lora_adapter", json={"lora_name": "a"}, headers=headers)
    if mode == "with-token":
        assert_unauthenticated(reply)
    else:
        assert reply.status_code == 404, reply.text


@pytest.mark.parametrize(
    ("path", "raw", "param"),
    [
        ("/v1/load_lora_adapter", rb'{"lora_name": "\ud800", "lora_path": "/x"}', "lora_name"),
        ("/v1/load_lora_adapter", rb'{"lora_name": "a", "lora_path": "/x\udc00"}', "lora_path"),
        ("/v1/load_lora_adapter", rb'{"lora_name": "a", "lora_path": "/x", "base_model_name": "\ud800"}',
         "base_model_name"),
        ("/v1/unload_lora_adapter", rb'{"lora_name": "\ud800"}', "lora_name"),
    ],
)  # fmt: skip
async def test_unpaired_surrogates_in_adapter_bodies_are_400(runtime, path, raw, param):
    _, rt = runtime
    reply = await rt.post(path, raw, ADMIN)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param and "surrogate" in reply.json()["error"]["message"]
