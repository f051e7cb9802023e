"""Request ids, request logs and traces across the gateway and a worker on loopback (one test process):
JSON log lines with the request's id, adapter and worker at both ends, --disable-log-requests, and one
OpenTelemetry trace spanning the gateway's HTTP span and the worker's Generate span."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from observed_stack import ADAPTER, OUTPUT_TOKENS, PROMPT_TOKEN_IDS, WORKER_ID, observed_stack  # noqa: E402

from loraplane import tracing  # noqa: E402
from loraplane.observability import ObservabilityConfig  # noqa: E402

BODY = {"model": ADAPTER, "prompt": "secret prompt text", "max_tokens": 8, "temperature": 0.5}


async def _complete(url: str, headers: dict | None = None, **extra) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await client.post("/v1/completions", json={**BODY, **extra}, headers=headers or {})


async def test_json_request_lines_carry_request_id_adapter_and_worker_at_both_ends():
    async with observed_stack(ObservabilityConfig()) as stack:
        response = await _complete(stack.url, {"X-Request-Id": "trace-me-1"})
        assert response.status_code == 200, response.text
        assert response.headers["x-request-id"] == "trace-me-1"
        assert response.json()["id"] == "cmpl-trace-me-1"  # vLLM: the OpenAI id is built from it
        lines = stack.request_lines()
    assert all({"timestamp", "level", "logger", "message"} <= line.keys() for line in stack.records())
    by_kind = {(line["logger"].split(".")[1], line["message"].split()[0]): line for line in lines}
    assert set(by_kind) == {
        ("gateway", "received"),
        ("gateway", "finished"),
        ("inference_worker", "received"),
        ("inference_worker", "finished"),
    }
    for line in lines:
        assert line["request_id"] == "trace-me-1" and line["adapter"] == ADAPTER and line["level"] == "INFO"
        assert "secret prompt text" not in str(line)
    worker_received = by_kind["inference_worker", "received"]
    assert worker_received["worker"] == WORKER_ID
    assert worker_received["prompt_tokens"] == len(PROMPT_TOKEN_IDS)
    assert "max_tokens=8" in worker_received["params"] and "temperature=0.5" in worker_received["params"]
    for end in ("gateway", "inference_worker"):
        finished = by_kind[end, "finished"]
        assert finished["output_tokens"] == OUTPUT_TOKENS and finished["finish_reason"] == "length"
        assert finished["prompt_tokens"] == len(PROMPT_TOKEN_IDS)
        assert 0 <= finished["ttft_s"] <= finished["total_s"] and finished["decode_s"] >= 0
    assert by_kind["gateway", "finished"]["worker"].startswith("127.0.0.1:")


async def test_a_request_without_an_id_gets_one_and_a_streamed_one_logs_too():
    async with observed_stack(ObservabilityConfig()) as stack:
        plain = await _complete(stack.url)
        streamed = await _complete(stack.url, stream=True)
        lines = stack.request_lines()
    assert plain.status_code == streamed.status_code == 200
    ids = [plain.headers["x-request-id"], streamed.headers["x-request-id"]]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids) and ids[0] != ids[1]
    assert plain.json()["id"] == f"cmpl-{ids[0]}"
    finished = [line for line in lines if line["message"].startswith("finished")]
    assert sorted(line["request_id"] for line in finished) == sorted(ids + ids)
    assert all(line["output_tokens"] == OUTPUT_TOKENS for line in finished)


@pytest.mark.parametrize("bad", ["", "has space", "x" * 129, "new\\nline"])
async def test_a_bad_request_id_is_refused_by_name(bad):
    async with observed_stack(ObservabilityConfig()) as stack:
        response = await _complete(stack.url, {"X-Request-Id": bad})
    assert response.status_code == 400
    assert "X-Request-Id" in response.json()["error"]["message"]


async def test_disable_log_requests_silences_the_request_lines():
    async with observed_stack(ObservabilityConfig(log_requests=False)) as stack:
        response = await _complete(stack.url, {"X-Request-Id": "quiet"})
        assert response.status_code == 200
        assert stack.request_lines() == []


async def test_one_trace_spans_gateway_and_worker_with_the_adapter_on_it():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = ObservabilityConfig(otlp_traces_endpoint="http://127.0.0.1:4317")  # replaced by provider
    async with observed_stack(config, tracer_provider=provider) as stack:
        response = await _complete(stack.url, {"X-Request-Id": "traced-1"})
        assert response.status_code == 200, response.text
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"POST /v1/completions", "Generate"}
    http, generate = spans["POST /v1/completions"], spans["Generate"]
    assert http.context.trace_id == generate.context.trace_id
    assert generate.parent is not None and generate.parent.span_id == http.context.span_id
    assert http.kind == generate.kind == SpanKind.SERVER
    for span in (http, generate):
        attributes = span.attributes
        assert attributes[tracing.ADAPTER] == ADAPTER and attributes[tracing.REQUEST_MODEL] == ADAPTER
        assert attributes[tracing.USAGE_PROMPT_TOKENS] == len(PROMPT_TOKEN_IDS)
        assert attributes[tracing.USAGE_COMPLETION_TOKENS] == OUTPUT_TOKENS
        assert tuple(attributes[tracing.FINISH_REASONS]) == ("length",)
        assert attributes[tracing.REQUEST_MAX_TOKENS] == 8
        assert 0 <= attributes[tracing.LATENCY_TTFT] <= attributes[tracing.LATENCY_E2E]
        assert attributes[tracing.LATENCY_DECODE] >= 0
    assert generate.attributes[tracing.WORKER] == WORKER_ID
    assert generate.attributes[tracing.REQUEST_ID] == "cmpl-traced-1-0"
    assert http.attributes["http.response.status_code"] == 200
