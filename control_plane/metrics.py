"""The control plane's Prometheus metrics (served on its own `--metrics-port`, `loraplane.metrics`).

Semantics:
- `registry_requests_total{method, code}` and `registry_request_duration_seconds{method}`: every
  AdapterRegistry call (CreateAdapter, GetAdapter, ListAdapters, DeleteAdapter, ListWorkers, ...) by its
  final status code name ("OK", "NOT_FOUND", "UNAUTHENTICATED", ...), timed from the call's arrival;
  `RegistryObserver` is the outermost server interceptor, so refusals by the token check count too.
- `worker_commands_total{command, result}` and `worker_command_latency_seconds{command}`: every command
  pushed on a worker stream ("sync", "load", "unload"), from the push to the worker's answer; result
  "ok", the worker's error code in lower case ("invalid_adapter", ...), or "worker_gone" when the stream
  closed first. A command still unanswered is counted when it is answered.
- Read from the registry and the open streams when scraped: `registered_workers{state}` (ready,
  draining, down, as recorded), `connected_workers` (open command streams), `registered_adapters` and
  `adapter_residency{state}` (worker x adapter rows per residency state: loading, device, host, disk,
  failed, unloading).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter as Tally
from collections.abc import Callable
from typing import Any

import grpc
from grpc_interceptor import AsyncServerInterceptor
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from loraplane.control_plane.commands import Command, CommandOutcome, LoadCommand, SyncCommand
from loraplane.control_plane.fleet import Fleet
from loraplane.control_plane.records import ResidencyState, WorkerState
from loraplane.control_plane.store import RegistryStore
from loraplane.metrics import LATENCY_BUCKETS

PREFIX = "loraplane:"
REGISTRY_METHODS = "/loraplane.registry.v1.AdapterRegistry/"


class ControlPlaneMetrics:
    """The control plane's registry (see the module doc); `watch(store, fleet)` enables the gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            PREFIX + "registry_requests",
            "Registry calls by method and status code",
            ["method", "code"],
            registry=r,
        )
        self.request_latency = Histogram(
            PREFIX + "registry_request_duration_seconds",
            "Registry call duration",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.commands = Counter(
            PREFIX + "worker_commands",
            "Worker commands by kind and result",
            ["command", "result"],
            registry=r,
        )
        self.command_latency = Histogram(
            PREFIX + "worker_command_latency_seconds",
            "Worker command push to answer",
            ["command"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def watch(self, store: RegistryStore, fleet: Fleet) -> None:
        """Export the registry's and the fleet's gauges from now on."""
        self.registry.register(_StateCollector(store, fleet))

    def interceptor(self) -> RegistryObserver:
        return RegistryObserver(self)

    def on_command_sent(self, command: Command, answer: asyncio.Future[CommandOutcome]) -> None:
        """Count and time `command` once `answer` resolves (see the module doc)."""
        kind, sent = command_kind(command), time.perf_counter()

        def answered(future: asyncio.Future[CommandOutcome]) -> None:
            if future.cancelled() or future.exception() is not None:
                result = "worker_gone"
            else:
                outcome = future.result()
                result = "ok" if outcome.ok else (outcome.error_code or "error").lower()
            self.commands.labels(kind, result).inc()
            self.command_latency.labels(kind).observe(time.perf_counter() - sent)

        answer.add_done_callback(answered)


def command_kind(command: Command) -> str:
    if isinstance(command, SyncCommand):
        return "sync"
    return "load" if isinstance(command, LoadCommand) else "unload"


class RegistryObserver(AsyncServerInterceptor):
    """Counts and times AdapterRegistry calls by final status (see the module doc); install it first."""

    def __init__(self, metrics: ControlPlaneMetrics) -> None:
        self.metrics = metrics

    async def intercept(
        self, method: Callable, request_or_iterator: Any, context: grpc.aio.ServicerContext, method_name: str
    ) -> Any:
        if not method_name.startswith(REGISTRY_METHODS):
            return await super().intercept(method, request_or_iterator, context, method_name)
        name, start, code = method_name[len(REGISTRY_METHODS) :], time.perf_counter(), "OK"
        try:
            return await super().intercept(method, request_or_iterator, context, method_name)
        except grpc.aio.AbortError:
            code = _code_name(context.code())
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception:
            code = "UNKNOWN"
            raise
        finally:
            self.metrics.requests.labels(name, code).inc()
            self.metrics.request_latency.labels(name).observe(time.perf_counter() - start)


def _code_name(code: grpc.StatusCode | int | None) -> str:
    if isinstance(code, grpc.StatusCode):
        return code.name
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.name
    return "UNKNOWN"


class _StateCollector(Collector):
    """The registry's and the fleet's state, read at scrape time (see the module doc)."""

    def __init__(self, store: RegistryStore, fleet: Fleet) -> None:
        self.store, self.fleet = store, fleet

    def collect(self):
        workers = self.store.list_workers()
        states = Tally(worker.state for worker in workers)
        family = GaugeMetricFamily(
            PREFIX + "registered_workers", "Workers known to the registry by state", labels=["state"]
        )
        for state in WorkerState:
            family.add_metric([state.value], states.get(state, 0))
        yield family
        yield GaugeMetricFamily(
            PREFIX + "connected_workers", "Open worker command streams", value=len(self.fleet.sessions())
        )
        yield GaugeMetricFamily(
            PREFIX + "registered_adapters", "Adapters registered", value=self.store.count_adapters()
        )
        residency = Tally(row.state for w in workers for row in self.store.residency_for_worker(w.worker_id))
        family = GaugeMetricFamily(
            PREFIX + "adapter_residency", "Adapter copies on workers by residency state", labels=["state"]
        )
        for state in ResidencyState:
            family.add_metric([state.value], residency.get(state, 0))
        yield family
