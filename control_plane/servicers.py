"""gRPC servicers: they only convert messages and call the domain (registry.py, workers.py)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

import grpc

from loraplane.control_plane import convert
from loraplane.control_plane.errors import InvalidArgumentError
from loraplane.control_plane.fleet import WorkerSession
from loraplane.control_plane.registry import AdapterService
from loraplane.control_plane.validation import check_base_model_name, check_base_model_not_adapter, check_name
from loraplane.control_plane.workers import WorkerHub
from loraplane.registry.v1 import registry_pb2 as reg
from loraplane.registry.v1 import registry_pb2_grpc
from loraplane.worker.v1 import worker_pb2_grpc

logger = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 30.0
# The HTTP convention for a client's request id; Envoy's REST transcoder passes headers on as metadata.
IDEMPOTENCY_KEY_HEADER = "idempotency-key"
DEADLINE_MARGIN_S = 0.2  # time kept back from the caller's deadline to build and send the answer


class AdapterRegistryServicer(registry_pb2_grpc.AdapterRegistryServicer):
    """loraplane.registry.v1.AdapterRegistry over an AdapterService."""

    def __init__(self, service: AdapterService) -> None:
        self.service = service

    async def CreateAdapter(self, request: reg.CreateAdapterRequest, context) -> reg.CreateAdapterResponse:
        create = convert.create_request(request)
        create = dataclasses.replace(create, request_id=_request_id(request.request_id, context))
        remaining = context.time_remaining()
        if remaining is not None:  # answer before the caller's deadline: grpcio does not propagate it
            budget = max(remaining - DEADLINE_MARGIN_S, 0.01)
            timeout = min(create.rollout_timeout_s or budget, budget)
            create = dataclasses.replace(create, rollout_timeout_s=timeout)
        result = await self.service.create(create)
        return reg.CreateAdapterResponse(
            adapter=convert.adapter_pb(result.adapter),
            loaded_workers=result.loaded_workers,
            failed_workers=result.failed_workers,
            pending_workers=result.pending_workers,
            message=result.message,
            replaced=result.replaced,
            deduplicated=result.deduplicated,
        )

    async def GetAdapter(self, request: reg.GetAdapterRequest, context) -> reg.GetAdapterResponse:
        return reg.GetAdapterResponse(adapter=convert.adapter_pb(self.service.get(request.name)))

    async def ListAdapters(self, request: reg.ListAdaptersRequest, context) -> reg.ListAdaptersResponse:
        views, next_token, total = self.service.list_adapters(
            request.page_size, request.page_token, request.base_model_name
        )
        return reg.ListAdaptersResponse(
            adapters=[convert.adapter_pb(view) for view in views],
            next_page_token=next_token,
            total_size=total,
        )

    async def DeleteAdapter(self, request: reg.DeleteAdapterRequest, context) -> reg.DeleteAdapterResponse:
        view, workers = await self.service.delete(request.name, request.allow_missing)
        adapter = convert.adapter_pb(view) if view is not None else None
        return reg.DeleteAdapterResponse(adapter=adapter, unloaded_workers=workers)

    async def ListWorkers(self, request: reg.ListWorkersRequest, context) -> reg.ListWorkersResponse:
        workers = self.service.list_workers(request.base_model_name, request.include_down)
        return reg.ListWorkersResponse(workers=[convert.worker_pb(w, rows) for w, rows in workers])


class WorkerControlServicer(worker_pb2_grpc.WorkerControlServicer):
    """loraplane.worker.v1.WorkerControl: the command stream (protocol in control_plane.workers)."""

    def __init__(self, hub: WorkerHub) -> None:
        self.hub = hub

    async def Connect(self, request_iterator, context):
        """Semantics: read Hello, register the session, then write queued commands while a reader task
        feeds results and heartbeats to the hub; the stream ends when either side closes."""
        session = await self._hello(request_iterator)
        reader = asyncio.create_task(self._read(request_iterator, session))
        first = True
        try:
            while True:
                command = await _next_command(session)
                if command is None:
                    break
                interval = self.hub.heartbeat_interval_s if first else 0
                first = False
                yield convert.command_pb(command, int(interval))
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            reason = session.close_reason or "stream closed"
            self.hub.disconnect(session, reason)
        if session.close_reason.startswith("no heartbeat") or session.close_reason.startswith("replaced"):
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"stream closed by the control plane: {reason}")

    async def _hello(self, request_iterator) -> WorkerSession:
        try:
            first = await asyncio.wait_for(anext(request_iterator), HELLO_TIMEOUT_S)
        except (StopAsyncIteration, asyncio.TimeoutError) as exc:
            raise InvalidArgumentError(f"a worker must send Hello within {HELLO_TIMEOUT_S:g} s") from exc
        if first.WhichOneof("message") != "hello":
            raise InvalidArgumentError("the first message on WorkerControl.Connect must be a Hello")
        hello = first.hello
        check_name(hello.worker_id, "worker_id")
        check_base_model_name(hello.base_model_name)
        clash = self.hub.store.get_adapter(hello.base_model_name) if hello.base_model_name else None
        check_base_model_not_adapter(hello.worker_id, hello.base_model_name, clash)
        return self.hub.connect(convert.hello_info(first.hello))

    async def _read(self, request_iterator, session: WorkerSession) -> None:
        try:
            async for message in request_iterator:
                kind = message.WhichOneof("message")
                if kind == "command_result":
                    self.hub.on_result(session, convert.outcome(message.command_result))
                elif kind == "heartbeat":
                    self.hub.on_heartbeat(session, convert.heartbeat_info(message.heartbeat))
                else:
                    logger.warning("worker %s sent an unexpected %s", session.worker_id, kind)
        except grpc.aio.AioRpcError as exc:  # pragma: no cover - transport teardown
            logger.debug("worker %s stream read ended: %s", session.worker_id, exc.code())
        finally:
            # Disconnect here, not only when the writer loop ends: after a client cancels, grpc may never
            # resume the response generator, and the session would look connected until heartbeats lapse.
            self.hub.disconnect(session, session.close_reason or "worker closed its stream")


def _request_id(field: str, context) -> str:
    """The create's request id: the field, or the `Idempotency-Key` header (metadata); both must agree."""
    keys = [value for key, value in context.invocation_metadata() or () if key == IDEMPOTENCY_KEY_HEADER]
    if len(set(keys)) > 1 or (keys and field and keys[0] != field):
        raise InvalidArgumentError(
            "the Idempotency-Key header and request_id disagree (or the header is repeated); send one id"
        )
    return field or (keys[0] if keys else "")


async def _next_command(session: WorkerSession):
    """The next queued command, or None once the session is closed."""
    if not session.outbox.empty():
        return session.outbox.get_nowait()
    getter = asyncio.ensure_future(session.outbox.get())
    closer = asyncio.ensure_future(session.closed.wait())
    try:
        done, _ = await asyncio.wait({getter, closer}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when the stream is cancelled mid-wait: no task is left pending
        getter.cancel()
        closer.cancel()
    if getter in done and not getter.cancelled():
        return getter.result()
    return None
