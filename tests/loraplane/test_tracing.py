"""--otlp-traces-endpoint's exporters against real collectors on loopback: OTLP over gRPC (a grpc server
with the OTLP TraceService) and over HTTP (an HTTP server taking /v1/traces), and W3C propagation."""

from __future__ import annotations

import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest

from loraplane import tracing
from loraplane.observability import ObservabilityConfig

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc  # noqa: E402


def _spans(requests: list[trace_service_pb2.ExportTraceServiceRequest]) -> list[tuple[str, str, dict]]:
    """(service.name, span name, attributes) of every exported span."""
    found = []
    for request in requests:
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: a.value for a in span.attributes}
                    found.append((resource["service.name"], span.name, attributes))
    return found


def _export_one(endpoint: str) -> None:
    provider = tracing.tracer_provider(endpoint, "loraplane-test")
    with tracing.tracer(provider).start_as_current_span("Generate", kind=tracing.server_kind()) as span:
        tracing.set_attributes(
            span, {tracing.ADAPTER: "sql-lora", tracing.FINISH_REASONS: ["stop"], "x": None}
        )
    assert provider.force_flush(10_000)
    provider.shutdown()


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    def Export(self, request, context):
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


def test_spans_reach_an_otlp_grpc_collector(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    collector = _Collector()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        _export_one(f"http://127.0.0.1:{port}")
    finally:
        server.stop(None)
    [(service, name, attributes)] = _spans(collector.requests)
    assert (service, name) == ("loraplane-test", "Generate")
    assert attributes[tracing.ADAPTER].string_value == "sql-lora" and "x" not in attributes
    assert [v.string_value for v in attributes[tracing.FINISH_REASONS].array_value.values] == ["stop"]


def test_spans_reach_an_otlp_http_collector(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    received: list[trace_service_pb2.ExportTraceServiceRequest] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()
            self.wfile.write(trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

        def log_message(self, *args) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        _export_one(f"http://127.0.0.1:{http.server_address[1]}/v1/traces")
    finally:
        http.shutdown()
    assert [name for _, name, _ in _spans(received)] == ["Generate"]


def test_an_unknown_protocol_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    with pytest.raises(RuntimeError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='http/json'"):
        tracing.tracer_provider("http://127.0.0.1:4318", "loraplane-test")


def test_no_endpoint_no_provider():
    assert tracing.provider_for(ObservabilityConfig(), "loraplane-test") is None


def test_trace_context_round_trips_through_grpc_metadata():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import get_current_span

    with tracing.tracer(TracerProvider()).start_as_current_span("parent") as span:
        metadata: list[tuple[str, str]] = [("x-request-id", "r-1")]
        tracing.inject(metadata)
    keys = [key for key, _ in metadata]
    assert keys[:2] == ["x-request-id", "traceparent"]
    remote = get_current_span(tracing.extract(metadata)).get_span_context()
    assert remote.trace_id == span.get_span_context().trace_id and remote.is_remote
    assert not get_current_span(tracing.extract([("x-request-id", "r-1")])).get_span_context().is_valid
