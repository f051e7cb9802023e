"""Request bodies no schema-driven generator writes, sent to every POST route of the real gateway.

schemathesis draws from the published schema, whose strings hold no unpaired UTF-16 surrogates and whose
bodies are well-formed JSON. Here each route's valid body is damaged instead: one field (any field the
route's request model declares, or an unknown one) set to an arbitrary JSON value whose strings may hold
lone surrogates (`\\ud800` escapes, which JSON allows and Python decodes to unencodable text), the
encoded body cut or bit-flipped (broken JSON, invalid UTF-8), or raw bytes, under a JSON, a text or no
content type. Asserted as for schemathesis: no 5xx, every 4xx an OpenAI error object.
"""

from __future__ import annotations

import json

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loraplane.gateway.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    LoadLoRAAdapterRequest,
    UnloadLoRAAdapterRequest,
)
from tests.fuzz.fleet import ADMIN_TOKEN, MODEL, check_http_response

EXAMPLES = 100
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
TEXT = st.text(st.characters() | SURROGATES, max_size=12)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
CONTENT_TYPES = ("application/json", "text/plain", None)


def valid_bodies(adapter_path: str) -> dict[str, tuple[type, dict]]:
    """path -> (request model, a body the route accepts)."""
    chat = [{"role": "user", "content": "Hello there"}]
    return {
        "/v1/completions": (CompletionRequest, {"model": MODEL, "prompt": "Hello there", "max_tokens": 4}),
        "/v1/chat/completions": (ChatCompletionRequest, {"model": MODEL, "messages": chat, "max_tokens": 4}),
        "/v1/load_lora_adapter": (
            LoadLoRAAdapterRequest,
            {"lora_name": "fuzz-new", "lora_path": adapter_path},
        ),
        "/v1/unload_lora_adapter": (UnloadLoRAAdapterRequest, {"lora_name": "fuzz-gone"}),
    }


@st.composite
def damaged(draw, model: type, valid: dict) -> bytes:
    kind = draw(st.sampled_from(("field", "field", "bytes", "raw")))
    if kind == "raw":
        return draw(st.binary(max_size=200))
    body = dict(valid)
    if kind == "field":
        key = draw(st.sampled_from(sorted(model.model_fields)) | TEXT)
        body[key] = draw(JSON)
    data = bytearray(json.dumps(body).encode())
    if kind == "bytes":
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(data) - 1))
            if draw(st.booleans()):
                data[at] ^= draw(st.integers(1, 255))
            else:
                del data[at:]
                data += b"{"
    return bytes(data)


@pytest.mark.parametrize(
    "path", ["/v1/completions", "/v1/chat/completions", "/v1/load_lora_adapter", "/v1/unload_lora_adapter"]
)
def test_damaged_bodies_get_openai_errors(fuzz_fleet, path):
    model, valid = valid_bodies(fuzz_fleet.adapter_path)[path]

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(body=damaged(model, valid), content_type=st.sampled_from(CONTENT_TYPES))
    def run(body, content_type):
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        if content_type:
            headers["Content-Type"] = content_type
        response = requests.post(f"{fuzz_fleet.gateway_url}{path}", data=body, headers=headers, timeout=60)
        check_http_response(f"POST {path} {body!r}", response)

    run()
