"""OpenTelemetry tracing of requests, on only with `--otlp-traces-endpoint` (vLLM's flag).

Semantics: `tracer_provider(endpoint, service)` builds an SDK `TracerProvider` that batches spans to an
OTLP collector: over gRPC by default, over HTTP when `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` (or
`OTEL_EXPORTER_OTLP_PROTOCOL`) is `http/protobuf`, the OpenTelemetry SDK's own variables. The gateway opens
a SERVER span per generation request and sends its context to the workers as W3C `traceparent` gRPC
metadata (`inject`); each worker opens its Generate span as that span's child (`extract`), so one trace
spans the gateway and every worker a request used. Attribute names are vLLM's `SpanAttributes` (the
`gen_ai.*` semantic conventions) plus `loraplane.*` ones for what those do not name.

The OpenTelemetry packages are the `[otel]` extra and are imported only here, only when tracing is on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

INSTRUMENTATION = "loraplane"
OTEL_EXTRA_HINT = "tracing needs the OpenTelemetry packages: pip install 'loraplane[otel]'"

# vLLM's SpanAttributes (vllm/tracing.py), gen_ai.* semantic conventions.
REQUEST_ID = "gen_ai.request.id"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_N = "gen_ai.request.n"
USAGE_PROMPT_TOKENS = "gen_ai.usage.prompt_tokens"
USAGE_COMPLETION_TOKENS = "gen_ai.usage.completion_tokens"
FINISH_REASONS = "gen_ai.response.finish_reasons"
LATENCY_TTFT = "gen_ai.latency.time_to_first_token"
LATENCY_E2E = "gen_ai.latency.e2e"
LATENCY_DECODE = "gen_ai.latency.time_in_model_decode"  # first to last token
# What the gen_ai conventions do not name.
ADAPTER = "loraplane.adapter"
WORKER = "loraplane.worker.id"
CACHED_PROMPT_TOKENS = "loraplane.usage.cached_prompt_tokens"


def _require_sdk():
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise RuntimeError(f"--otlp-traces-endpoint: {OTEL_EXTRA_HINT}") from exc
    return Resource, TracerProvider, BatchSpanProcessor


def _exporter(endpoint: str):
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )
    try:
        if protocol.strip() == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        elif protocol.strip() == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        else:
            raise RuntimeError(
                f"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL={protocol!r} is not supported; use grpc or http/protobuf"
            )
    except ImportError as exc:
        raise RuntimeError(f"--otlp-traces-endpoint: {OTEL_EXTRA_HINT}") from exc
    return OTLPSpanExporter(endpoint=endpoint)


def tracer_provider(endpoint: str, service: str):
    """An SDK TracerProvider exporting to `endpoint` as service `service` (module doc); RuntimeError
    saying what to install when the `[otel]` extra is missing. It flushes its spans at exit."""
    resource_cls, provider_cls, batch_cls = _require_sdk()
    provider = provider_cls(resource=resource_cls.create({"service.name": service}))
    provider.add_span_processor(batch_cls(_exporter(endpoint)))
    return provider


def provider_for(config, service: str):
    """The TracerProvider for an `ObservabilityConfig`: None when tracing is off."""
    return tracer_provider(config.otlp_traces_endpoint, service) if config.tracing else None


def tracer(provider) -> Any:
    """loraplane's tracer from `provider` (a TracerProvider)."""
    return provider.get_tracer(INSTRUMENTATION)


def inject(metadata: list[tuple[str, str]]) -> None:
    """Append the current span's W3C trace context (`traceparent`, `tracestate`) to gRPC `metadata`."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    metadata.extend(carrier.items())


def extract(metadata: Iterable[tuple[str, Any]] | None):
    """The remote parent context carried by incoming gRPC `metadata` (an empty context when none)."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
    return TraceContextTextMapPropagator().extract(carrier)


def server_kind():
    from opentelemetry.trace import SpanKind

    return SpanKind.SERVER


def set_attributes(span, attributes: dict[str, Any]) -> None:
    """Set the attributes that have a value (None is skipped, sequences become lists of str)."""
    for key, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, Sequence) and not isinstance(value, str):
            value = [str(v) for v in value]
        span.set_attribute(key, value)


def set_error(span, description: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, description))
