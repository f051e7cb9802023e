"""The worker's request logs and trace spans, from a server interceptor watching each Generate stream.

Semantics: every Generate call is handled inside a log context (loraplane.observability) naming its
request id (the caller's `x-request-id` metadata, else the request's own id), its model (adapter) and this
worker, so every line logged for it carries them. With request logs on, a "received" INFO line follows
the call's `start` message (its prompt is tokenized and admitted: the prompt's length is known; no prompt
text) and a "finished" line its end: its `usage` message, a cancellation ("abort") or an error after it
started. A call refused before `start` (bad input, unknown model, queue full) logs one "refused" line
with the error's type. With tracing on, each call is a SERVER span ("Generate"), the child of the span
whose W3C `traceparent` the caller sent (the gateway's), with the request's attributes
(loraplane.request_record). Install it inside the error interceptor, so it sees domain errors.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from grpc_interceptor import AsyncServerInterceptor

from loraplane import tracing
from loraplane.inference.v1 import inference_pb2 as pb
from loraplane.observability import ObservabilityConfig, request_context, set_context
from loraplane.request_record import RequestRecord

log = logging.getLogger("loraplane.inference_worker.requests")
GENERATE_METHOD = "/loraplane.inference.v1.Inference/Generate"
REQUEST_ID_KEY = "x-request-id"
SPAN_NAME = "Generate"
MAX_ID_CHARS = 128  # a longer id from a direct gRPC caller is cut in the logs


def metadata_value(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key and isinstance(value, str) and value:
            return value
    return None


class RequestObserver(AsyncServerInterceptor):
    """Logs and traces Generate calls (module doc); `base_model()` names the model that is no adapter."""

    def __init__(
        self,
        worker_id: str,
        config: ObservabilityConfig,
        base_model: Callable[[], str],
        tracer_provider: Any = None,
    ) -> None:
        self.worker_id, self.log_requests, self.base_model = worker_id, config.log_requests, base_model
        self.tracer = tracing.tracer(tracer_provider) if tracer_provider is not None else None

    async def intercept(
        self, method: Callable, request_or_iterator: Any, context: grpc.aio.ServicerContext, method_name: str
    ) -> Any:
        if method_name != GENERATE_METHOD:
            return await super().intercept(method, request_or_iterator, context, method_name)
        return self._observed(method, request_or_iterator, context)

    async def _observed(
        self, method: Callable, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        record = RequestRecord(request.request_id)
        record.on_request(request)
        record.base_model, record.worker = self.base_model(), self.worker_id
        request_id = (metadata_value(context, REQUEST_ID_KEY) or request.request_id)[:MAX_ID_CHARS] or None
        with request_context(request_id=request_id, adapter=record.adapter, worker=self.worker_id):
            if self.tracer is None:
                async for response in self._watched(method(request, context), record):
                    yield response
                return
            parent = tracing.extract(context.invocation_metadata())
            with self.tracer.start_as_current_span(
                SPAN_NAME, context=parent, kind=tracing.server_kind(), end_on_exit=True
            ) as span:
                span.set_attribute("rpc.system", "grpc")
                span.set_attribute("rpc.method", "Generate")
                try:
                    async for response in self._watched(method(request, context), record):
                        yield response
                finally:
                    tracing.set_attributes(span, record.span_attributes())
                    if record.outcome and record.outcome != "abort":
                        tracing.set_error(span, record.outcome)

    async def _watched(
        self, responses: AsyncIterator[pb.GenerateResponse], record: RequestRecord
    ) -> AsyncIterator[pb.GenerateResponse]:
        outcome = "abort"  # cancelled (client gone, deadline) unless the stream ends or fails
        started = False
        try:
            async for response in responses:
                record.on_message(response)
                if response.HasField("start"):
                    started = True
                    record.request_id = response.start.request_id or record.request_id
                    set_context(adapter=record.adapter)
                    if self.log_requests:
                        record.log_received(log)
                yield response
            outcome = ""
        except Exception as exc:
            outcome = type(exc).__name__
            raise
        finally:
            record.finish(outcome)
            if started and self.log_requests:
                record.log_finished(log)
            elif self.log_requests and outcome not in ("", "abort"):
                log.info("refused request %s: %s", record.request_id or "-", outcome)
