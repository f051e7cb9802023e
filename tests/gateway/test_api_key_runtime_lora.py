"""With an API key on the gateway, Authorization carries that key; the runtime LoRA routes then take the
control plane's admin token from X-Admin-Token. A real control plane with an admin token on loopback."""

from __future__ import annotations

import pytest
import pytest_asyncio

from tests.gateway.test_runtime_lora_auth import ADMIN_TOKEN, start_runtime

pytestmark = pytest.mark.asyncio(loop_scope="session")
KEY = "sk-gateway-key"
UNLOAD = {"lora_name": "never-loaded"}


@pytest_asyncio.fixture(scope="module")
async def keyed_runtime(tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("LORAPLANE_API_KEY", KEY)
    control_plane, runtime = await start_runtime(tmp_path_factory.mktemp("keyed"), ADMIN_TOKEN, monkeypatch)
    yield runtime
    await runtime.gateway.stop()
    await control_plane.stop()
    monkeypatch.undo()


async def test_the_admin_token_rides_in_x_admin_token_beside_the_api_key(keyed_runtime):
    headers = {"authorization": f"Bearer {KEY}", "x-admin-token": ADMIN_TOKEN}
    reply = await keyed_runtime.post("/v1/unload_lora_adapter", UNLOAD, headers)
    assert reply.status_code == 404, reply.text  # authorized: the adapter is unknown


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({"authorization": f"Bearer {KEY}"}, "x-admin-token"),
        ({"authorization": f"Bearer {KEY}", "x-admin-token": "wrong"}, ""),
        ({"x-admin-token": ADMIN_TOKEN}, "API key"),
        ({"authorization": f"Bearer {ADMIN_TOKEN}"}, "API key"),
    ],
)
async def test_either_credential_missing_or_wrong_is_401(keyed_runtime, headers, says):
    reply = await keyed_runtime.post("/v1/unload_lora_adapter", UNLOAD, headers)
    assert reply.status_code == 401, reply.text
    assert says in reply.json()["error"]["message"]
