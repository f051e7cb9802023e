"""The gateway's request ids, request logs and trace spans.

Semantics: `RequestLog` (a pure ASGI middleware) handles each generation request (`GENERATION_PATHS`):
- its id is the client's `X-Request-Id` header (1-128 characters of `REQUEST_ID_CHARS`; another value is
  refused with 400 naming the header) or a new random one; the response carries it back in `X-Request-Id`,
  the OpenAI `id` is built from it (vLLM's behaviour: `cmpl-<id>`), and every line logged for the request
  carries it (loraplane.observability's context), the worker's included: the Generate calls send it as
  `x-request-id` gRPC metadata (`outgoing_metadata`).
- with request logs on, each Generate call logs a "received" INFO line once its worker admitted it
  (`on_admitted`: adapter, worker, prompt tokens, sampling parameters; no prompt text) and the request a
  "finished" line when its response has been sent: workers, tokens, TTFT, decode and total time, finish
  reasons, and the HTTP status when it is not 200.
- with tracing on, the request is a SERVER span ("POST /v1/completions") whose W3C context the Generate
  calls carry (`outgoing_metadata`), so the workers' spans are its children; the span gets the request's
  attributes (loraplane.request_record) and the HTTP status.
The hooks (`outgoing_metadata`, `on_admitted`, `on_message`) are called by loraplane.gateway.generation and
cost a context-variable lookup outside a generation request.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loraplane import tracing
from loraplane.gateway.metrics import ARRIVAL_KEY
from loraplane.observability import ObservabilityConfig, request_context
from loraplane.request_record import RequestRecord

if TYPE_CHECKING:
    from loraplane.gateway.workers import WorkerHandle
    from loraplane.inference.v1 import inference_pb2 as pb

log = logging.getLogger("loraplane.gateway.requests")
GENERATION_PATHS = frozenset({"/v1/completions", "/v1/chat/completions"})
REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_CHARS = "letters, digits and . _ : - @ / + ="
_VALID_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


class _Request:
    """One generation request in flight: its record (all its Generate calls together) and settings."""

    __slots__ = ("record", "workers", "log_requests", "tracing")

    def __init__(self, record: RequestRecord, log_requests: bool, tracing_on: bool) -> None:
        self.record, self.workers = record, []
        self.log_requests, self.tracing = log_requests, tracing_on


_current: contextvars.ContextVar[_Request | None] = contextvars.ContextVar("loraplane_gateway_request")


def current_request_id() -> str | None:
    """The id of the generation request being handled (None outside one)."""
    request = _current.get(None)
    return request.record.request_id if request is not None else None


def outgoing_metadata() -> list[tuple[str, str]] | None:
    """gRPC metadata for a Generate call of the current request: its id and, when tracing, its trace."""
    request = _current.get(None)
    if request is None:
        return None
    metadata = [(REQUEST_ID_HEADER, request.record.request_id)]
    if request.tracing:
        tracing.inject(metadata)
    return metadata


def on_admitted(worker: WorkerHandle, call: pb.GenerateRequest, start: pb.GenerateStart) -> None:
    """A worker admitted one Generate call of the current request (its `start` message arrived)."""
    request = _current.get(None)
    if request is None:
        return
    record = request.record
    record.base_model = record.base_model or worker.base_model
    record.on_request(call)
    record.on_start(start)
    if worker.worker_id not in request.workers:
        request.workers.append(worker.worker_id)
        record.worker = ",".join(request.workers)
    if request.log_requests:
        part = RequestRecord(start.request_id or call.request_id, record.arrival)
        part.base_model = worker.base_model
        part.on_request(call)
        part.on_start(start)
        with request_context(adapter=part.adapter, worker=worker.worker_id):
            part.log_received(log)


def on_message(message: pb.GenerateResponse) -> None:
    """A Generate response message of the current request."""
    request = _current.get(None)
    if request is not None:
        request.record.on_message(message)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class RequestLog:
    """Pure ASGI middleware (module doc): the request's context must reach the tasks the app starts."""

    def __init__(
        self,
        app: ASGIApp,
        config: ObservabilityConfig,
        refuse: Callable[[Request, str], Response],
        tracer_provider: Any = None,
    ) -> None:
        self.app, self.config, self.refuse = app, config, refuse
        self.tracer = tracing.tracer(tracer_provider) if tracer_provider is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in GENERATION_PATHS:
            await self.app(scope, receive, send)
            return
        given = _header(scope, REQUEST_ID_HEADER.encode())
        if given is not None and not _VALID_ID.fullmatch(given):
            message = f"the X-Request-Id header must be 1 to 128 {REQUEST_ID_CHARS}; got {given[:140]!r}"
            await self.refuse(Request(scope), message)(scope, receive, send)
            return
        record = RequestRecord(given or uuid.uuid4().hex, scope.get(ARRIVAL_KEY))
        request = _Request(record, self.config.log_requests, self.tracer is not None)
        token = _current.set(request)
        try:
            with request_context(request_id=record.request_id), self._span(scope) as span:
                await self._serve(scope, receive, send, request, span)
        finally:
            _current.reset(token)

    def _span(self, scope: Scope):
        if self.tracer is None:
            return contextlib.nullcontext()
        name = f"{scope['method']} {scope['path']}"
        return self.tracer.start_as_current_span(name, kind=tracing.server_kind())

    async def _serve(self, scope: Scope, receive: Receive, send: Send, request: _Request, span) -> None:
        status = 500  # unless a response starts

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request.record.request_id)
            await send(message)

        record, outcome = request.record, None
        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            outcome = "cancelled"  # the client went away (or the server is stopping)
            raise
        finally:
            record.finish(outcome or ("" if status == 200 else f"status {status}"))
            if request.log_requests:
                with request_context(adapter=record.adapter, worker=record.worker or None):
                    record.log_finished(log)
            if span is not None:
                tracing.set_attributes(span, _http_attributes(scope, status) | record.span_attributes())
                if status >= 500:
                    tracing.set_error(span, f"HTTP {status}")


def _http_attributes(scope: Scope, status: int) -> dict[str, Any]:
    return {
        "http.request.method": scope["method"],
        "url.path": scope["path"],
        "http.route": scope["path"],
        "http.response.status_code": status,
    }
