"""Prometheus metrics of the gateway (one registry per app, so tests can build several apps).

Semantics: `adapter` labels are bounded: the first `max_adapter_labels` adapter names seen get their
own label value, later ones are counted under "__other__". Residency is exported per worker as the
number of adapters in each residency state ("device", "host", "disk", "loading"), so its cardinality is
workers x states, not workers x adapters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

OTHER_ADAPTERS = "__other__"
BASE_MODEL = "__base__"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class GatewayMetrics:
    """The gateway's counters, histograms and gauges."""

    def __init__(self, max_adapter_labels: int = 64) -> None:
        self.registry = CollectorRegistry()
        self._max_adapter_labels = max_adapter_labels
        self._adapter_labels: set[str] = set()
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
            p + "time_to_first_token_seconds", "Time to first token", buckets=LATENCY_BUCKETS, registry=r
        )
        self.itl = Histogram(
            p + "inter_token_latency_seconds",
            "Time between streamed chunks",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            p + "request_latency_seconds", "Generation request latency", buckets=LATENCY_BUCKETS, registry=r
        )
        self.in_flight = Gauge(p + "requests_in_flight", "Generation requests in flight", registry=r)
        self.workers = Gauge(p + "workers", "Workers known to the gateway by health", ["state"], registry=r)
        self.residency = Gauge(
            p + "worker_adapters", "Adapters resident per worker and tier", ["worker", "tier"], registry=r
        )

    def adapter_label(self, model: str, is_base: bool) -> str:
        if is_base or not model:
            return BASE_MODEL
        if model in self._adapter_labels:
            return model
        if len(self._adapter_labels) < self._max_adapter_labels:
            self._adapter_labels.add(model)
            return model
        return OTHER_ADAPTERS

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
