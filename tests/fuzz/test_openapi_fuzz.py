"""schemathesis on the gateway's own `/openapi.json`, against the real fleet (see conftest.py).

Every route the gateway publishes gets seeded, bounded examples: schema-valid bodies (positive) and
bodies that break the schema (negative), with the `model` of some of them set to the served base model
or the adapter so that they reach the engine, and the admin token on the runtime LoRA routes so that
they reach the control plane. Asserted for every response: no 5xx, and every 4xx is an OpenAI error
object. Afterwards the engine still answers a normal completion, base and adapter.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.fuzz.fleet import ADAPTER, ADMIN_TOKEN, MODEL

# Every (method, path) the gateway publishes, with its number of examples per generation mode. A route
# added to the gateway without an entry here fails `test_every_published_route_is_fuzzed`.
ROUTES = {
    ("POST", "/v1/completions"): 50,
    ("POST", "/v1/chat/completions"): 50,
    ("POST", "/v1/load_lora_adapter"): 20,
    ("POST", "/v1/unload_lora_adapter"): 20,
    ("GET", "/v1/models"): 3,
    ("GET", "/health"): 3,
    ("GET", "/metrics"): 3,
}
# What a fuzzed body may aim at instead of its generated names (None: keep the generated values).
TARGETS = (None, None, MODEL, ADAPTER)
# Responses per (path, status) and seconds spent waiting for them, over the module's fuzzing.
STATUSES: Counter[tuple[str, int]] = Counter()
CALL_SECONDS: Counter[str] = Counter()
SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def openapi(fuzz_fleet):
    return schemathesis.openapi.from_url(f"{fuzz_fleet.gateway_url}/openapi.json")


@pytest.fixture(scope="module")
def session():
    with requests.Session() as http:
        yield http


def assert_openai_error(response) -> None:
    """A 4xx body must be `{"error": {"message", "type", "param", "code"}}` with a message to act on."""
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"message", "type", "param", "code"} <= set(error), error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error


def check_response(case, response) -> None:
    request = f"{case.method} {case.path} {json.dumps(case.body, default=repr)[:2000]}"
    assert response.status_code < 500, f"{request} -> {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        assert_openai_error(response)


def aim(case, target: str | None, fleet) -> None:
    """Point some generated bodies at what exists (the base model, the adapter and its files), so that
    they get past the lookup and reach the engine or the control plane's checks."""
    if target is None or not isinstance(case.body, dict):
        return
    if "model" in case.body:
        case.body["model"] = target
    if "lora_path" in case.body and target == ADAPTER:
        case.body["lora_path"] = fleet.adapter_path


def test_every_published_route_is_fuzzed(openapi):
    published = {(op.ok().method.upper(), op.ok().path) for op in openapi.get_all_operations()}
    assert published == set(ROUTES)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("route", list(ROUTES), ids=lambda r: f"{r[0]} {r[1]}")
def test_route(openapi, session, fuzz_fleet, route, mode):
    method, path = route
    operation = openapi[path][method]
    if mode == GenerationMode.NEGATIVE and method == "GET":
        pytest.skip("nothing to negate: the GET routes take no input")
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if "lora_adapter" in path else None

    @settings(SETTINGS, max_examples=ROUTES[route])
    @given(case=operation.as_strategy(generation_mode=mode), target=st.sampled_from(TARGETS))
    def run(case, target):
        aim(case, target, fuzz_fleet)
        start = time.monotonic()
        response = case.call(session=session, headers=headers, timeout=60)
        CALL_SECONDS[path] += time.monotonic() - start
        STATUSES[path, response.status_code] += 1
        check_response(case, response)

    run()


def test_engine_serves_after_fuzzing(fuzz_fleet, session):
    print(f"\n{sum(STATUSES.values())} fuzzed requests; seconds waiting per route: {dict(CALL_SECONDS)}")
    print(f"responses per (route, status): {sorted(STATUSES.items())}")
    for path in ("/v1/completions", "/v1/chat/completions"):
        # The fuzzing reached the engine: some generated requests were served, some refused.
        assert any(s == 200 and p == path for p, s in STATUSES), sorted(STATUSES.items())
        assert any(400 <= s < 500 and p == path for p, s in STATUSES), sorted(STATUSES.items())
    for model in (MODEL, ADAPTER):
        body = fuzz_fleet.completion(model)
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["usage"]["completion_tokens"] == 4
    health = session.get(f"{fuzz_fleet.gateway_url}/health", timeout=10)
    assert health.status_code == 200, health.text
