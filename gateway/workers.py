"""The gateway's view of the inference workers: discovery, health, load, and one channel per worker.

Semantics: workers come from the control plane's ListWorkers (READY workers, with their base model,
adapters and load) and/or from static HOST:PORT addresses (base model and adapters learned from the
worker's ListModels). Both are refreshed every `refresh_interval_s`. A worker's load for routing is what
it last reported plus the gateway's own calls in flight to it. `mark_down` takes a worker out of routing
for `down_cooldown_s` (after UNAVAILABLE), until a refresh after the cooldown sees it answer again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import grpc

from loraplane.gateway.config import GatewayConfig
from loraplane.gateway.registry_client import RegistryClient, WorkerInfo
from loraplane.gateway.routing import WorkerView
from loraplane.grpc_options import client_options
from loraplane.inference.v1 import inference_pb2 as pb
from loraplane.inference.v1 import inference_pb2_grpc
from loraplane.tls import aio_channel

log = logging.getLogger(__name__)


@dataclass
class WorkerHandle:
    """One worker: its channel and stub, what it serves, and how busy it is."""

    worker_id: str
    endpoint: str
    channel: grpc.aio.Channel
    stub: inference_pb2_grpc.InferenceStub
    base_model: str = ""
    adapters: dict[str, str] = field(default_factory=dict)
    reported_load: int = 0
    in_flight: int = 0
    down_until: float = 0.0

    @property
    def healthy(self) -> bool:
        return time.monotonic() >= self.down_until

    def view(self) -> WorkerView:
        return WorkerView(
            worker_id=self.worker_id,
            base_model=self.base_model,
            adapters=frozenset(self.adapters),
            load=self.reported_load + self.in_flight,
            healthy=self.healthy,
        )


class WorkerPool:
    """All known workers, kept fresh by `refresh()` (called periodically once `start()` ran)."""

    def __init__(self, config: GatewayConfig, registry: RegistryClient | None = None) -> None:
        self.config = config
        self.registry = registry
        self.workers: dict[str, WorkerHandle] = {}
        self._task: asyncio.Task | None = None
        self._refresh_lock = asyncio.Lock()
        self._last_refresh = 0.0

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._refresh_loop(), name="worker-refresh")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*(w.channel.close() for w in self.workers.values()), return_exceptions=True)
        self.workers.clear()

    def views(self) -> list[WorkerView]:
        return [w.view() for w in self.workers.values()]

    def is_base_model(self, model: str) -> bool:
        return not model or any(w.base_model == model for w in self.workers.values())

    def mark_down(self, worker: WorkerHandle) -> None:
        if worker.healthy:
            log.warning("worker %s (%s) is unavailable; routing around it", worker.worker_id, worker.endpoint)
        worker.down_until = time.monotonic() + self.config.down_cooldown_s

    async def refresh(self) -> None:
        """Re-read the worker list (control plane) and the static workers' models; never raises."""
        async with self._refresh_lock:
            self._last_refresh = time.monotonic()
            seen: set[str] = set()
            if self.registry is not None:
                seen |= await self._refresh_from_registry()
            if self.config.workers:
                seen |= await self._refresh_static()
            for worker_id in [w for w in self.workers if w not in seen]:
                gone = self.workers.pop(worker_id)
                log.info("worker %s (%s) left the pool", worker_id, gone.endpoint)
                asyncio.get_running_loop().create_task(gone.channel.close(grace=60.0))

    async def refresh_if_older(self, max_age_s: float) -> bool:
        """Refresh unless the last refresh is younger than `max_age_s`; True when it refreshed."""
        if time.monotonic() - self._last_refresh < max_age_s:
            return False
        await self.refresh()
        return True

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.refresh_interval_s)
            await self.refresh()

    def _handle(self, worker_id: str, endpoint: str) -> WorkerHandle:
        worker = self.workers.get(worker_id)
        if worker is not None and worker.endpoint == endpoint:
            return worker
        if worker is not None:
            asyncio.get_running_loop().create_task(worker.channel.close(grace=60.0))
        channel = aio_channel(endpoint, self.config.tls, client_options())
        worker = WorkerHandle(worker_id, endpoint, channel, inference_pb2_grpc.InferenceStub(channel))
        self.workers[worker_id] = worker
        log.info("worker %s at %s joined the pool", worker_id, endpoint)
        return worker

    async def _refresh_from_registry(self) -> set[str]:
        try:
            infos: list[WorkerInfo] = await self.registry.list_workers()
        except grpc.aio.AioRpcError as exc:
            log.warning("cannot list workers from the control plane: %s", exc.details())
            return set(self.workers) - set(self.config.workers)
        seen = set()
        for info in infos:
            if not info.ready or not info.endpoint:
                continue
            worker = self._handle(info.worker_id, info.endpoint)
            worker.base_model, worker.adapters, worker.reported_load = (
                info.base_model,
                info.adapters,
                info.load,
            )
            seen.add(info.worker_id)
        return seen

    async def _refresh_static(self) -> set[str]:
        handles = [self._handle(endpoint, endpoint) for endpoint in self.config.workers]
        await asyncio.gather(*(self._probe(w) for w in handles if w.healthy or self._cooled(w)))
        return set(self.config.workers)

    @staticmethod
    def _cooled(worker: WorkerHandle) -> bool:
        return time.monotonic() >= worker.down_until

    async def _probe(self, worker: WorkerHandle) -> None:
        try:
            reply = await worker.stub.ListModels(pb.ListModelsRequest(), timeout=self.config.rpc_timeout_s)
        except grpc.aio.AioRpcError as exc:
            log.debug("static worker %s did not answer ListModels: %s", worker.endpoint, exc.code())
            self.mark_down(worker)
            return
        worker.base_model = next((m.id for m in reply.models if not m.parent), worker.base_model)
        worker.adapters = {m.id: "" for m in reply.models if m.parent}
        worker.down_until = 0.0

    async def list_models(self) -> list[pb.ModelCard]:
        """Every healthy worker's ListModels merged by id: base models first, then adapters."""
        healthy = [w for w in self.workers.values() if w.healthy]
        replies = await asyncio.gather(
            *(w.stub.ListModels(pb.ListModelsRequest(), timeout=self.config.rpc_timeout_s) for w in healthy),
            return_exceptions=True,
        )
        cards: dict[str, pb.ModelCard] = {}
        for worker, reply in zip(healthy, replies, strict=True):
            if isinstance(reply, BaseException):
                log.warning("worker %s failed ListModels: %s", worker.worker_id, reply)
                continue
            for card in reply.models:
                cards.setdefault(card.id, card)
        return sorted(cards.values(), key=lambda c: bool(c.parent))
