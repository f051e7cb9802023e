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

from loraplane.gateway.app import create_app
from loraplane.gateway.config import GatewayConfig
from tests.fuzz.fleet import ADAPTER, ADMIN_TOKEN, MODEL, check_http_response


def published_routes() -> list[tuple[str, str]]:
    """Every (METHOD, path) of the fuzzed gateway's schema (runtime LoRA updates on), read from the app
    itself at collection, so that a route added to the gateway is fuzzed without a change here."""
    config = GatewayConfig(workers=("127.0.0.1:1",), allow_runtime_lora_updating=True)
    paths = create_app(config).openapi()["paths"]
    return sorted((method.upper(), path) for path, item in paths.items() for method in item)


ROUTES = published_routes()
# Examples per generation mode: more where a request reaches the engine, few for fixed replies.
EXAMPLES = {"/v1/completions": 50, "/v1/chat/completions": 50}
DEFAULT_EXAMPLES = 20
FIXED_REPLY_EXAMPLES = 3
# What a fuzzed body may aim at instead of its generated names (None: keep the generated values).
NEW_ADAPTER = "fuzz-new"
TARGETS = (None, None, MODEL, ADAPTER, NEW_ADAPTER)
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


def aim(case, target: str | None, fleet) -> None:
    """Point some generated bodies at what exists (the base model, the adapter and its files, a name a
    load may register), so that they get past the lookup and reach the engine or the control plane's
    checks. An unload never names the served adapter: it is checked afterwards."""
    if target is None or not isinstance(case.body, dict):
        return
    if "model" in case.body:
        case.body["model"] = target
    if "lora_path" in case.body:
        case.body["lora_path"] = fleet.adapter_path
    if "lora_name" in case.body and target == NEW_ADAPTER:
        case.body["lora_name"] = target


def test_every_published_route_is_fuzzed(openapi):
    published = {(op.ok().method.upper(), op.ok().path) for op in openapi.get_all_operations()}
    assert published == set(ROUTES)
    assert {("POST", "/v1/completions"), ("POST", "/v1/load_lora_adapter")} <= published


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r[0]} {r[1]}")
def test_route(openapi, session, fuzz_fleet, route, mode):
    method, path = route
    operation = openapi[path][method]
    takes_input = operation.body.items or list(operation.iter_parameters())
    examples = EXAMPLES.get(path, DEFAULT_EXAMPLES) if takes_input else FIXED_REPLY_EXAMPLES
    if mode == GenerationMode.NEGATIVE and not takes_input:
        pytest.skip("nothing to negate: the route takes no input")
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if "lora_adapter" in path else None

    @settings(SETTINGS, max_examples=examples)
    @given(case=operation.as_strategy(generation_mode=mode), target=st.sampled_from(TARGETS))
    def run(case, target):
        aim(case, target, fuzz_fleet)
        start = time.monotonic()
        response = case.call(session=session, headers=headers, timeout=60)
        CALL_SECONDS[path] += time.monotonic() - start
        STATUSES[path, response.status_code] += 1
        body = json.dumps(case.body, default=repr)[:2000]
        check_http_response(f"{case.method} {case.path} {body}", response)

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
