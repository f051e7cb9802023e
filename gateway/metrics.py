"""Prometheus metrics of the gateway (one registry per app, so tests can build several apps).

Semantics: `adapter` labels are bounded (`loraplane.metrics.AdapterLabels`): the first
`max_adapter_labels` adapter names seen get their own label value, later ones are counted under
"__other__". Residency is exported per worker as the number of adapters in each residency state
("device", "host", "disk", "loading"), so its cardinality is workers x states, not workers x adapters.

Request timings are the client's view: they start when the request reaches the gateway (`ArrivalStamp`
marks its ASGI scope, before the body is read and validated). Time to first token ends, for a stream,
when the first event carrying a generated token is handed to the client; for a plain JSON response,
when the response (the first content the client gets) is. Inter-token latency is the gap between
streamed events with tokens (plain responses have none).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from loraplane.metrics import LATENCY_BUCKETS, AdapterLabels

if TYPE_CHECKING:
    from collections.abc import Iterable

    from starlette.requests import Request
    from starlette.types import ASGIApp, Receive, Scope, Send

    from loraplane.inference.v1 import inference_pb2 as pb

ARRIVAL_KEY = "loraplane.arrival"


class GatewayMetrics:
    """The gateway's counters, histograms and gauges."""

    def __init__(self, max_adapter_labels: int = 64) -> None:
        self.registry = CollectorRegistry()
        self._adapter_labels = AdapterLabels(max_adapter_labels)
        r, p = self.registry, "loraplane_gateway_"
        self.requests = Counter(
            p + "requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.adapter_requests = Counter(
            p + "adapter_requests",
            "Generation requests per adapter (bounded label set)",
            ["adapter"],
            registry=r,
        )
        self.prompt_tokens = Counter(p + "prompt_tokens", "Prompt tokens processed", registry=r)
        self.generation_tokens = Counter(p + "generation_tokens", "Tokens generated", registry=r)
        self.ttft = Histogram(
            p + "time_to_first_token_seconds",
            "Arrival at the gateway to the first generated token sent to the client",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            p + "inter_token_latency_seconds",
            "Time between streamed events with tokens",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            p + "request_latency_seconds",
            "Arrival at the gateway to the end of the response",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(p + "requests_in_flight", "Generation requests in flight", registry=r)
        self.workers = Gauge(p + "workers", "Workers known to the gateway by health", ["state"], registry=r)
        self.residency = Gauge(
            p + "worker_adapters", "Adapters resident per worker and tier", ["worker", "tier"], registry=r
        )

    def adapter_label(self, model: str, is_base: bool) -> str:
        return self._adapter_labels.label(model, is_base)

    def set_workers(self, workers) -> None:
        """Refresh the worker gauges from WorkerHandle objects."""
        healthy = sum(1 for w in workers if w.healthy)
        self.workers.labels("healthy").set(healthy)
        self.workers.labels("down").set(len(workers) - healthy)
        self.residency.clear()
        for worker in workers:
            tiers: dict[str, int] = {}
            for tier in worker.adapters.values():
                tiers[tier or "unknown"] = tiers.get(tier or "unknown", 0) + 1
            for tier, count in tiers.items():
                self.residency.labels(worker.worker_id, tier).set(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ArrivalStamp:
    """ASGI middleware: marks when each HTTP request reached the gateway (see the module doc)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[ARRIVAL_KEY] = time.perf_counter()
        await self.app(scope, receive, send)


def arrival_of(request: Request) -> float:
    """When `request` reached the gateway (now, for an app built without `ArrivalStamp`)."""
    return request.scope.get(ARRIVAL_KEY) or time.perf_counter()


class RequestTracker:
    """One generation request's metrics, timed from its arrival (see the module doc)."""

    def __init__(self, metrics: GatewayMetrics, adapter_label: str, arrival: float, streamed: bool) -> None:
        self.metrics, self.arrival, self.streamed = metrics, arrival, streamed
        self.last: float | None = None  # when the previous chunk with tokens arrived
        metrics.adapter_requests.labels(adapter_label).inc()
        metrics.in_flight.inc()

    def on_chunk(self, num_tokens: int) -> None:
        """A chunk of `num_tokens` tokens, about to be sent (streamed) or kept for the response."""
        if not num_tokens:
            return
        now = time.perf_counter()
        if self.streamed:
            if self.last is None:
                self.metrics.ttft.observe(now - self.arrival)
            else:
                self.metrics.itl.observe(now - self.last)
        self.last = now
        self.metrics.generation_tokens.inc(num_tokens)

    def finish(self, usages: Iterable[pb.Usage]) -> None:
        """The request ends (`usages`: its calls' token counts); a plain response is about to be sent."""
        now = time.perf_counter()
        if not self.streamed and self.last is not None:
            self.metrics.ttft.observe(now - self.arrival)
        self.metrics.prompt_tokens.inc(sum(u.prompt_tokens for u in usages))
        self.metrics.e2e.observe(now - self.arrival)
        self.metrics.in_flight.dec()
