"""Control-plane server lifecycle: store, services, health, reflection, heartbeat watcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from loraplane.control_plane.config import ControlPlaneConfig
from loraplane.control_plane.data_dir import DataDirLock
from loraplane.control_plane.fleet import Fleet
from loraplane.control_plane.interceptors import (
    REGISTRY_SERVICE,
    WORKER_SERVICE,
    AuthInterceptor,
    error_interceptor,
)
from loraplane.control_plane.metrics import ControlPlaneMetrics
from loraplane.control_plane.registry import AdapterService
from loraplane.control_plane.servicers import AdapterRegistryServicer, WorkerControlServicer
from loraplane.control_plane.sqlite_store import SQLiteStore
from loraplane.control_plane.store import RegistryStore
from loraplane.control_plane.workers import WorkerHub
from loraplane.grpc_errors import DecodeInterceptor
from loraplane.grpc_options import server_options
from loraplane.metrics import MetricsServer
from loraplane.ports import check_ports
from loraplane.registry.v1 import registry_pb2, registry_pb2_grpc
from loraplane.tls import add_port
from loraplane.worker.v1 import worker_pb2, worker_pb2_grpc

logger = logging.getLogger(__name__)


class ControlPlaneServer:
    """`await start()` binds and serves; `port` is the bound port; `await stop()` drains and closes.

    Without a `store`, the server opens the SQLite registry in `config.data_dir` after taking the data
    dir's lock (control_plane.data_dir): a second server on the same folder raises DataDirInUseError
    before touching the registry; `stop()` (or the process's exit) releases it."""

    def __init__(self, config: ControlPlaneConfig, store: RegistryStore | None = None) -> None:
        self.config = config
        self._lock = DataDirLock.acquire(config.data_dir) if store is None else None
        try:
            self.store = store if store is not None else SQLiteStore.in_dir(config.data_dir)
        except BaseException:
            self._release_lock()
            raise
        self.metrics = ControlPlaneMetrics()
        self.metrics_server: MetricsServer | None = None
        fleet = Fleet(on_send=self.metrics.on_command_sent)
        self.hub = WorkerHub(self.store, fleet, config.heartbeat_interval_s, config.heartbeat_timeout_s)
        self.metrics.watch(self.store, fleet)
        self.service = AdapterService(config, self.hub)
        self.health = health.aio.HealthServicer()
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._watcher: asyncio.Task | None = None

    async def start(self) -> int:
        if not self.config.admin_token:
            logger.warning("no admin token set: anyone who reaches this port can create and delete adapters")
        if not self.config.worker_token:
            logger.warning(
                "no worker token set: any local process can register as a worker and receive prompts; "
                "set LORAPLANE_WORKER_TOKEN for the control plane and its workers"
            )
        if not self.config.adapter_roots:
            logger.warning("no --adapter-root given: local adapter sources will be refused")
        host, _, port = self.config.listen.rpartition(":")
        bind_host = host.strip("[]")  # a clear message naming the flag, before any state changes
        check_ports(
            [(bind_host, int(port), "--listen"), (bind_host, self.config.metrics_port, "--metrics-port")]
        )
        self.hub.reset()  # no stream survives a restart; workers reconnect and resync
        server = grpc.aio.server(
            interceptors=[
                self.metrics.interceptor(),  # first: refusals by the token check count too
                AuthInterceptor(self.config.admin_token, self.config.worker_token),
                DecodeInterceptor(),
                error_interceptor(),
            ],
            options=server_options(self.config.max_receive_bytes),
        )
        registry_pb2_grpc.add_AdapterRegistryServicer_to_server(AdapterRegistryServicer(self.service), server)
        worker_pb2_grpc.add_WorkerControlServicer_to_server(WorkerControlServicer(self.hub), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = (
            registry_pb2.DESCRIPTOR.services_by_name["AdapterRegistry"].full_name,
            worker_pb2.DESCRIPTOR.services_by_name["WorkerControl"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
        self.port = add_port(server, self.config.listen, self.config.tls)
        if self.port == 0:
            raise RuntimeError(f"cannot bind {self.config.listen}")
        await server.start()
        self._server = server
        if self.config.metrics_port:
            metrics_host = self.config.listen.rpartition(":")[0].strip("[]")
            self.metrics_server = MetricsServer(self.metrics.registry, metrics_host, self.config.metrics_port)
        if self._lock is not None:
            self._lock.set_address(f"{host}:{self.port}")
        for service in ("", REGISTRY_SERVICE, WORKER_SERVICE):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._watcher = asyncio.create_task(self.hub.watch_heartbeats())
        logger.info("control plane listening on %s:%d (data in %s)", host, self.port, self.config.data_dir)
        return self.port

    async def wait(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()

    async def stop(self) -> None:
        if self._server is None:
            self._release_lock()
            return
        await self.health.enter_graceful_shutdown()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for session in self.hub.fleet.sessions():
            self.hub.disconnect(session, "control plane shutting down")
        await self._server.stop(self.config.shutdown_grace_s)
        self._server = None
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None
        self.store.close()
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
