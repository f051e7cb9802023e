"""The registry's REST face (Envoy's gRPC-JSON transcoder) passes the `Idempotency-Key` header through:
a retried POST /v1/adapters gets the adapter its first attempt created, a reused key for another adapter
a 400 naming the conflict. Real Envoy, real control plane."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.control_plane.adapter_files import write_adapter
from tests.control_plane.process import ControlPlaneProcess
from tests.gateway.test_envoy_edge import ADMIN, _start_edge


@pytest.fixture
def edge_with_roots(tmp_path) -> Iterator[tuple[str, object]]:
    roots = tmp_path / "adapters"
    roots.mkdir()
    cp = ControlPlaneProcess(tmp_path / "data", roots, ADMIN["authorization"].removeprefix("Bearer "))
    proc = None
    try:
        proc, url = _start_edge(tmp_path, cp.start(), expose_admin=True)
        yield url, roots
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=20)
        cp.stop()


def test_a_retried_rest_create_with_the_same_idempotency_key_returns_the_first_record(edge_with_roots):
    url, roots = edge_with_roots
    body = {"adapter": {"name": "rest-lora", "source": {"path": str(write_adapter(roots / "r"))}}}
    keyed = {**ADMIN, "Idempotency-Key": "6f1c2a4e-rest"}
    first = httpx.post(f"{url}/v1/adapters", json=body, headers=keyed, timeout=30)
    assert first.status_code == 200, first.text
    again = httpx.post(f"{url}/v1/adapters", json=body, headers=keyed, timeout=30)
    assert again.status_code == 200, again.text
    assert again.json()["deduplicated"] is True
    assert again.json()["adapter"]["version"] == first.json()["adapter"]["version"]
    unkeyed = httpx.post(f"{url}/v1/adapters", json=body, headers=ADMIN, timeout=30)
    assert unkeyed.status_code == 409  # ALREADY_EXISTS, as before
    other = {"adapter": {"name": "other-lora", "source": body["adapter"]["source"]}}
    reused = httpx.post(f"{url}/v1/adapters", json=other, headers=keyed, timeout=30)
    assert reused.status_code == 400 and "already used to create adapter 'rest-lora'" in reused.text
