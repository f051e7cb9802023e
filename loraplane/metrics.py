"""What every component's Prometheus metrics share: bounded adapter labels, latency buckets, the HTTP server.

Semantics:
- `AdapterLabels`: the first `max_labels` adapter names seen each get their own label value, for the
  life of the process; later names are counted under OTHER_ADAPTERS and the base model under BASE_MODEL.
  A name never moves between label values, so a counter's `rate()` stays right; the bound keeps a fleet
  of thousands of adapters from turning into thousands of series (adapter names start with a letter or
  a digit, so the two reserved values can never be an adapter's name).
- `StreamHistogram`: a histogram for per-token paths, observed from one thread (the event loop) without
  a lock: one bisect and two additions, a tenth of prometheus_client's `Histogram.observe` (a lock and a
  scan of the buckets). A scrape from another thread may see an observation's count before its sum.
- `MetricsServer`: prometheus_client's HTTP exposition (`/metrics`, any path) in a daemon thread, bound to
  the component's own listen host (loopback by default); port 0 picks a free port, `port` says which.
"""

from __future__ import annotations

import argparse
import bisect
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

OTHER_ADAPTERS = "__other__"
BASE_MODEL = "__base__"
# Seconds; vLLM's request-latency buckets, finer below 0.1 s for CPU tests and the gateway's own work.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0,
)  # fmt: skip
# Per output token: vLLM's time_per_output_token buckets.
TOKEN_LATENCY_BUCKETS = (
    0.001, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip


def add_metrics_port_argument(parser: argparse.ArgumentParser | Any) -> None:
    """`--metrics-port`, the same on every server command (0: no metrics endpoint)."""
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve Prometheus /metrics on this port of the --listen host (default: 0, off)",
    )


DEFAULT_MAX_ADAPTER_LABELS = 64


class AdapterLabels:
    """The bounded `adapter` label values (see the module doc). Thread-safe."""

    def __init__(self, max_labels: int = DEFAULT_MAX_ADAPTER_LABELS) -> None:
        if max_labels < 0:
            raise ValueError(f"the adapter label bound must be >= 0, got {max_labels}")
        self.max_labels = max_labels
        self._names: set[str] = set()
        self._lock = threading.Lock()

    def label(self, name: str, is_base: bool = False) -> str:
        """The label value for adapter `name` (BASE_MODEL for the base model or an empty name)."""
        if is_base or not name:
            return BASE_MODEL
        if name in self._names:
            return name
        with self._lock:
            if name in self._names or len(self._names) < self.max_labels:
                self._names.add(name)
                return name
        return OTHER_ADAPTERS


class StreamHistogram(Collector):
    """A lock-free histogram with one label set (see the module doc); register it with a registry."""

    def __init__(self, name: str, documentation: str, buckets: Iterable[float], label_names=()) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = sorted(float(b) for b in buckets)
        self.label_names = tuple(label_names)
        self.label_values: tuple[str, ...] = ("",) * len(self.label_names)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one counts what lies above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += (
            1  # bucket i holds bounds[i-1] < v <= bounds[i]
        )
        self.sum += value

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.label_names)
        counts, cumulative, buckets = list(self.counts), 0, []
        for bound, count in zip([*map(str, self.bounds), "+Inf"], counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        family.add_metric(list(self.label_values), buckets, self.sum)
        yield family


class MetricsServer:
    """`registry` exposed over HTTP on `host:port` (see the module doc); `close()` stops it."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"the metrics port must be in [0, 65535], got {port}")
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.host = host
        self.port = int(self._server.server_port)
        logger.info("metrics on http://%s/metrics", self.address)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
