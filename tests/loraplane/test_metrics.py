"""loraplane.metrics: bounded adapter labels and the HTTP exposition server."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter

from loraplane.metrics import BASE_MODEL, OTHER_ADAPTERS, AdapterLabels, MetricsServer
from tests.loraplane.prometheus_scrape import parse, scrape, value


def test_adapter_labels_are_bounded_and_stable():
    labels = AdapterLabels(max_labels=2)
    assert [labels.label(n) for n in ("a", "b", "c", "a")] == ["a", "b", OTHER_ADAPTERS, "a"]
    assert labels.label("") == labels.label("x", is_base=True) == BASE_MODEL
    assert AdapterLabels(0).label("a") == OTHER_ADAPTERS
    with pytest.raises(ValueError, match="bound"):
        AdapterLabels(-1)


def test_metrics_server_serves_its_registry_on_a_free_port_and_closes():
    registry = CollectorRegistry()
    Counter("loraplane:things", "things", registry=registry).inc(3)
    server = MetricsServer(registry, "127.0.0.1", 0)
    try:
        assert server.port > 0 and server.address == f"127.0.0.1:{server.port}"
        assert value(scrape(f"http://{server.address}/metrics"), "loraplane:things_total") == 3
    finally:
        server.close()
    with pytest.raises(ValueError, match="metrics port"):
        MetricsServer(registry, "127.0.0.1", 70000)


def test_stream_histogram_exposes_what_prometheus_clients_histogram_does():
    from prometheus_client import Histogram, generate_latest

    from loraplane.metrics import StreamHistogram

    buckets, observations = (0.01, 0.1, 1.0), (0.005, 0.01, 0.05, 0.1, 0.5, 2.0, 2.0)
    reference, ours = CollectorRegistry(), CollectorRegistry()
    histogram = Histogram(
        "loraplane:gap_seconds", "gaps", ["model_name"], buckets=buckets, registry=reference
    )
    stream = StreamHistogram("loraplane:gap_seconds", "gaps", buckets, ["model_name"])
    stream.label_values = ("m",)
    ours.register(stream)
    for seconds in observations:
        histogram.labels("m").observe(seconds)
        stream.observe(seconds)

    def samples(registry):
        return {
            k: v for k, v in parse(generate_latest(registry).decode()).items() if not k.endswith("_created")
        }

    assert samples(ours) == samples(reference)
    assert value(samples(ours), "loraplane:gap_seconds_bucket", le="0.01") == 2  # le: bounds are inclusive
