"""The worker's Prometheus metrics: vLLM's series under the `loraplane:` prefix, plus per-adapter ones.

Semantics:
- Request series come from the Generate stream as it leaves the servicer (`GenerateObserver`, the
  innermost server interceptor), the way vLLM V1 measures them in its front-end process: a request
  arrives when Generate is called (before its prompt is tokenized), its first token is the first chunk
  that carries token ids, and it ends with its `usage` message ("stop"/"length" from the chunks' finish
  reasons), a cancellation ("abort") or an error after it started ("error"). A request refused before
  its `start` message (bad input, queue full, unknown model) is not a served request and counts nowhere
  here. `time_to_first_token_seconds` is arrival -> first token; `inter_token_latency_seconds` is the gap
  between consecutive chunks with tokens; `time_per_output_token_seconds` is, per request, (last token
  - first token) / (tokens - 1) (vLLM V1's request_time_per_output_token); `e2e_request_latency_seconds`
  is arrival -> end.
- Engine series are read from `EngineClient.stats()` and `list_loras()` when scraped (no polling):
  queue lengths, KV cache usage (`kv_cache_usage_perc`, vLLM V1's name: the cache lives in CPU memory on
  a CPU worker, so "gpu" would be wrong there), prefix-cache tokens queried and hit, preemptions,
  `lora_requests_info` (the running and waiting adapters as comma-joined label values and `max_lora`,
  value = scrape time; only the current label set is exported, unlike vLLM's ever-growing one) and
  `lora_adapters{tier}` (adapters per residency tier: device, host, loading, disk).
- Per-adapter series (`adapter_*`) carry a bounded `adapter` label (`loraplane.metrics.AdapterLabels`).
  `adapter_load_seconds{result}` times each adapter load into the worker (files checked, weights read
  into the host cache), from static `--lora-modules` and control-plane commands alike.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter as Tally
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
from grpc_interceptor import AsyncServerInterceptor
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from loraplane.inference.v1 import inference_pb2 as pb
from loraplane.inference_worker.engine_client import EngineClient
from loraplane.metrics import (
    DEFAULT_MAX_ADAPTER_LABELS,
    LATENCY_BUCKETS,
    TOKEN_LATENCY_BUCKETS,
    AdapterLabels,
    StreamHistogram,
)

PREFIX = "loraplane:"
GENERATE_METHOD = "/loraplane.inference.v1.Inference/Generate"
TOKEN_COUNT_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)
LOAD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TIERS = ("device", "host", "loading", "disk")
_FINISH_REASONS = {
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_ABORT: "abort",
}


class WorkerMetrics:
    """The worker's registry (see the module doc). `attach` names the engine once it has started."""

    def __init__(self, max_lora: int = 0, max_adapter_labels: int = DEFAULT_MAX_ADAPTER_LABELS) -> None:
        self.registry = CollectorRegistry()
        self.adapters = AdapterLabels(max_adapter_labels)
        self.max_lora = max_lora
        self.engine: EngineClient | None = None
        self.model_name = ""
        m, a = ["model_name"], ["adapter"]
        hist, count = self._histogram, self._counter
        self.ttft = hist("time_to_first_token_seconds", "Arrival to first token", m, LATENCY_BUCKETS)
        self.itl = StreamHistogram(
            PREFIX + "inter_token_latency_seconds", "Gap between chunks with tokens", TOKEN_LATENCY_BUCKETS, m
        )
        self.registry.register(self.itl)
        self.tpot = hist("time_per_output_token_seconds", "Decode time per token", m, TOKEN_LATENCY_BUCKETS)
        self.e2e = hist("e2e_request_latency_seconds", "Arrival to end of request", m, LATENCY_BUCKETS)
        self.prompt_len = hist("request_prompt_tokens", "Prompt tokens per request", m, TOKEN_COUNT_BUCKETS)
        self.output_len = hist("request_generation_tokens", "Tokens per request", m, TOKEN_COUNT_BUCKETS)
        self.prompt_tokens = count("prompt_tokens", "Prompt tokens of served requests", m)
        self.generation_tokens = count("generation_tokens", "Tokens generated", m)
        self.success = count("request_success", "Finished requests by reason", [*m, "finished_reason"])
        self.adapter_requests = count("adapter_requests", "Finished requests", [*a, "finished_reason"])
        self.adapter_prompt_tokens = count("adapter_prompt_tokens", "Prompt tokens per adapter", a)
        self.adapter_generation_tokens = count("adapter_generation_tokens", "Tokens per adapter", a)
        self.adapter_ttft = hist(
            "adapter_time_to_first_token_seconds", "TTFT per adapter", a, LATENCY_BUCKETS
        )
        self.adapter_e2e = hist(
            "adapter_e2e_request_latency_seconds", "Latency per adapter", a, LATENCY_BUCKETS
        )
        self.adapter_load = hist(
            "adapter_load_seconds", "Adapter loads into the worker", ["result"], LOAD_BUCKETS
        )
        self.registry.register(_EngineCollector(self))

    def _histogram(self, name: str, text: str, labels: list[str], buckets) -> Histogram:
        return Histogram(PREFIX + name, text, labels, registry=self.registry, buckets=buckets)

    def _counter(self, name: str, text: str, labels: list[str]) -> Counter:
        return Counter(PREFIX + name, text, labels, registry=self.registry)

    def attach(self, engine: EngineClient) -> None:
        """Serve the engine's series from now on (the engine has started; its model name is known)."""
        self.engine, self.model_name = engine, engine.model_name
        self.itl.label_values = (self.model_name,)

    @contextlib.contextmanager
    def time_load(self) -> Iterator[None]:
        """Time one adapter load (see the module doc): result "error" when it raises."""
        started, result = time.perf_counter(), "error"
        try:
            yield
            result = "success"
        finally:
            self.adapter_load.labels(result).observe(time.perf_counter() - started)

    def interceptor(self) -> GenerateObserver:
        return GenerateObserver(self)


class RequestTrack:
    """One Generate call's timings and counts, fed with each response message (see the module doc)."""

    __slots__ = ("metrics", "arrival", "first", "last", "tokens", "prompt_tokens", "label", "reason", "ended")

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics, self.arrival = metrics, time.perf_counter()
        self.first = self.last = 0.0
        self.tokens = self.prompt_tokens = 0
        self.label: str | None = None  # set by `start`: only admitted requests get an adapter label
        self.reason = ""
        self.ended = False

    def on_response(self, response: pb.GenerateResponse) -> None:
        kind = response.WhichOneof("response")
        if kind == "chunk":
            chunk = response.chunk
            num_tokens = len(chunk.token_ids)
            if num_tokens:
                now = time.perf_counter()
                if self.tokens:
                    self.metrics.itl.observe(now - self.last)
                else:
                    self.first = now
                    self._observe_ttft(now - self.arrival)
                self.last, self.tokens = now, self.tokens + num_tokens
            if chunk.finish_reason:
                self.reason = _FINISH_REASONS.get(chunk.finish_reason, "stop")
        elif kind == "start":
            start = response.start
            model = start.model
            self.label = self.metrics.adapters.label(model, is_base=model == self.metrics.model_name)
            self.prompt_tokens = len(start.prompt_token_ids)
        elif kind == "usage":
            self.end(self.reason or "stop")

    def _observe_ttft(self, seconds: float) -> None:
        self.metrics.ttft.labels(self.metrics.model_name).observe(seconds)
        if self.label is not None:
            self.metrics.adapter_ttft.labels(self.label).observe(seconds)

    def end(self, reason: str) -> None:
        """Record the request's end once (a call refused before `start` records nothing)."""
        if self.ended or self.label is None:
            return
        self.ended = True
        m, name, label = self.metrics, self.metrics.model_name, self.label
        e2e = time.perf_counter() - self.arrival
        m.e2e.labels(name).observe(e2e)
        m.adapter_e2e.labels(label).observe(e2e)
        if self.tokens > 1:
            m.tpot.labels(name).observe((self.last - self.first) / (self.tokens - 1))
        m.prompt_len.labels(name).observe(self.prompt_tokens)
        m.output_len.labels(name).observe(self.tokens)
        m.prompt_tokens.labels(name).inc(self.prompt_tokens)
        m.generation_tokens.labels(name).inc(self.tokens)
        m.success.labels(name, reason).inc()
        m.adapter_requests.labels(label, reason).inc()
        m.adapter_prompt_tokens.labels(label).inc(self.prompt_tokens)
        m.adapter_generation_tokens.labels(label).inc(self.tokens)


class GenerateObserver(AsyncServerInterceptor):
    """Feeds every Generate stream's messages to a `RequestTrack`; other methods pass through. Install it
    last (innermost), so that the arrival is the servicer's and errors are still domain errors."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    async def intercept(
        self, method: Callable, request_or_iterator: Any, context: grpc.aio.ServicerContext, method_name: str
    ) -> Any:
        if method_name != GENERATE_METHOD:
            return await super().intercept(method, request_or_iterator, context, method_name)
        return self._observed(method(request_or_iterator, context))

    async def _observed(self, responses: AsyncIterator[pb.GenerateResponse]) -> AsyncIterator[Any]:
        track = RequestTrack(self.metrics)
        reason = "abort"  # cancelled (client gone, deadline) unless the stream ends or fails
        try:
            async for response in responses:
                track.on_response(response)
                yield response
        except Exception:
            reason = "error"
            raise
        finally:
            track.end(reason)


class _EngineCollector(Collector):
    """The engine's series, read at scrape time (see the module doc)."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def collect(self):
        engine = self.metrics.engine
        if engine is None or not engine.is_running:
            return
        stats, name, p = engine.stats(), [self.metrics.model_name], PREFIX
        yield _gauge(p + "num_requests_running", "Sequences running in the engine", stats.num_running, name)
        yield _gauge(p + "num_requests_waiting", "Sequences waiting to be scheduled", stats.num_waiting, name)
        yield _gauge(p + "kv_cache_usage_perc", "KV cache usage (1 = full)", stats.kv_usage, name)
        yield _gauge(p + "kv_cache_free_blocks", "Free KV cache blocks", stats.num_free_blocks, name)
        yield _gauge(p + "kv_cache_total_blocks", "KV cache blocks", stats.num_total_blocks, name)
        for metric, text, value in (
            (
                "prefix_cache_queries",
                "Prompt tokens looked up in the prefix cache",
                stats.prefix_cache_queries,
            ),
            ("prefix_cache_hits", "Prompt tokens found in the prefix cache", stats.prefix_cache_hits),
            ("num_preemptions", "Sequences preempted (recomputed later)", stats.num_preemptions),
        ):
            family = CounterMetricFamily(p + metric, text, labels=["model_name"])
            family.add_metric(name, value)
            yield family
        loras = engine.list_loras() if self.metrics.max_lora else []
        yield self._lora_info(loras, stats.running_lora_versions, stats.waiting_lora_versions)
        tiers = Tally(info.tier for info in loras)
        family = GaugeMetricFamily(p + "lora_adapters", "Adapters held per residency tier", labels=["tier"])
        for tier in sorted({*TIERS, *tiers}):
            family.add_metric([tier], tiers.get(tier, 0))
        yield family

    def _lora_info(self, loras, running: frozenset[str], waiting: frozenset[str]) -> GaugeMetricFamily:
        names: dict[str, str] = {}
        for info in loras:  # a staged replacement ("name@version") must not hide the public name
            if info.version and (info.version not in names or "@" in names[info.version]):
                names[info.version] = info.name
        family = GaugeMetricFamily(
            PREFIX + "lora_requests_info",
            "Running and waiting adapters (value: scrape time)",
            labels=["running_lora_adapters", "waiting_lora_adapters", "max_lora"],
        )
        joined = [",".join(sorted(names.get(v, v[:12]) for v in versions)) for versions in (running, waiting)]
        family.add_metric([*joined, str(self.metrics.max_lora)], time.time())
        return family


def _gauge(name: str, text: str, value: float, labels: list[str]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text, labels=["model_name"])
    family.add_metric(labels, value)
    return family
