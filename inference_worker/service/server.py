"""The worker process's lifecycle: gRPC server, engine, static adapters, control-plane link, shutdown.

Order: the server starts first with health NOT_SERVING (so orchestrators see the worker while the model
loads), then the engine starts, `--lora-modules` load, health turns SERVING and the control-plane client
connects. On SIGTERM/SIGINT: health NOT_SERVING, a draining heartbeat, then new
Generates are refused with UNAVAILABLE by the servicer while in-flight streams get `shutdown_grace_s` to
finish; then the gRPC server and the engine stop.

If the engine loop dies (an error in a step that no single request can be blamed for), the worker stops
itself: health turns NOT_SERVING at once, the control-plane stream ends (so the control plane marks the
worker down instead of routing to it), in-flight streams have already failed with UNAVAILABLE, and
`serve` returns EXIT_ENGINE_DEAD, so the process exits non-zero and its supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from loraplane.grpc_errors import DecodeInterceptor
from loraplane.grpc_options import server_options
from loraplane.inference.v1 import inference_pb2_grpc
from loraplane.inference_worker.config import EngineConfig
from loraplane.inference_worker.engine_client import EngineClient
from loraplane.inference_worker.outputs import EngineStats
from loraplane.inference_worker.service.config import WorkerServiceConfig, split_host_port
from loraplane.inference_worker.service.control_client import ControlPlaneClient, WorkerIdentity
from loraplane.inference_worker.service.interceptors import error_interceptor
from loraplane.inference_worker.service.metrics import WorkerMetrics
from loraplane.inference_worker.service.request_log import RequestObserver
from loraplane.inference_worker.service.served_models import AdapterTarget, ServedModels
from loraplane.inference_worker.service.servicer import SERVICE_NAME, InferenceServicer
from loraplane.metrics import MetricsServer
from loraplane.observability import ObservabilityConfig, config_from_env
from loraplane.tls import add_port
from loraplane.tracing import provider_for

logger = logging.getLogger(__name__)

EXIT_ENGINE_DEAD = 3
ENGINE_WATCH_INTERVAL_S = 0.2


def build_engine(config: EngineConfig) -> EngineClient:
    """Construct the async engine (imports torch and the model code; call it off the event loop)."""
    from loraplane.inference_worker.async_engine import AsyncLLMEngine

    return AsyncLLMEngine(config)


def model_root(config: EngineConfig) -> str:
    """The base model's `root` for ListModels: the path or hub id as given, the demo model's path if none."""
    if config.model:
        return str(config.model)
    from loraplane.inference_worker.demo import demo_model_path

    return demo_model_path()


class WorkerServer:
    """One worker: `await start()` binds and loads, `await wait_for_termination()` serves until a signal
    or `request_stop()`, `await stop()` drains and exits (see module doc)."""

    def __init__(self, config: WorkerServiceConfig, observability: ObservabilityConfig | None = None) -> None:
        self.config = config
        observability = observability or config_from_env()  # as the `loraplane` command exported it
        self.tracer_provider = provider_for(observability, "loraplane-worker")
        requests = RequestObserver(config.worker_id, observability, self._model_name, self.tracer_provider)
        engine_config = config.engine
        max_lora = engine_config.max_loras if engine_config.enable_lora else 0
        self.metrics = WorkerMetrics(max_lora, config.max_adapter_labels)
        self.metrics_server: MetricsServer | None = None
        self.server = grpc.aio.server(
            interceptors=[DecodeInterceptor(), error_interceptor(), requests, self.metrics.interceptor()],
            options=server_options(config.max_receive_bytes),
        )
        self.health = health.aio.HealthServicer()
        self.servicer = InferenceServicer(config.max_in_flight, max_n=config.engine.max_num_seqs)
        self.engine: EngineClient | None = None
        self.models: ServedModels | None = None
        self.control: ControlPlaneClient | None = None
        self.port = 0
        self.draining = False
        self.exit_code = 0
        self._stop_requested = asyncio.Event()
        self._control_task: asyncio.Task | None = None
        self._watch_task: asyncio.Task | None = None
        inference_pb2_grpc.add_InferenceServicer_to_server(self.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )

    def _model_name(self) -> str:
        return self.engine.model_name if self.engine is not None else ""

    @property
    def endpoint(self) -> str:
        return self.config.endpoint_for(self.port)

    async def start(self) -> None:
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port = add_port(self.server, self.config.listen, self.config.tls)
        await self.server.start()
        if self.config.metrics_port:
            host = split_host_port(self.config.listen)[0]
            self.metrics_server = MetricsServer(self.metrics.registry, host, self.config.metrics_port)
        logger.info(
            "worker listening on %s (endpoint %s); loading the model", self.config.listen, self.endpoint
        )
        engine_config = self.config.engine
        self.engine = await asyncio.to_thread(build_engine, engine_config)
        await self.engine.start()
        root = await asyncio.to_thread(model_root, engine_config)
        enable_lora = engine_config.enable_lora
        self.models = ServedModels(self.engine, self.engine.model_name, root, enable_lora)
        self.models.load_timer = self.metrics.time_load
        self.metrics.attach(self.engine)
        for module in self.config.lora_modules:
            await self.models.load(
                AdapterTarget(module.name, module.path, base_model_name=module.base_model_name)
            )
            logger.info("loaded adapter %s from %s", module.name, module.path)
        self.servicer.attach(self.engine, self.models)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        logger.info(
            "worker %s serving %s on %s", self.config.worker_id, self.engine.model_name, self.endpoint
        )
        if self.config.control_plane:
            self._start_control_client(enable_lora)
        self._watch_task = asyncio.create_task(self._watch_engine(), name="engine-watch")

    async def _watch_engine(self) -> None:
        """Stop the worker, to exit with EXIT_ENGINE_DEAD, once the engine loop has died (module doc)."""
        while self.engine.is_running:
            await asyncio.sleep(ENGINE_WATCH_INTERVAL_S)
        logger.critical("the engine loop died; stopping the worker so that its supervisor restarts it")
        self.exit_code = EXIT_ENGINE_DEAD
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._stop_control_client()
        self.request_stop()

    def _start_control_client(self, enable_lora: bool) -> None:
        from loraplane.inference_worker.model_loader import resolve_device

        engine_config = self.config.engine
        self.control = ControlPlaneClient(
            target=self.config.control_plane,
            identity=WorkerIdentity(
                worker_id=self.config.worker_id,
                base_model_name=self.engine.model_name,
                endpoint=self.endpoint,
                max_loras=engine_config.max_loras if enable_lora else 0,
                max_lora_rank=engine_config.max_lora_rank if enable_lora else 0,
                max_cpu_loras=(engine_config.max_cpu_loras or engine_config.max_loras) if enable_lora else 0,
                max_num_seqs=engine_config.max_num_seqs,
                max_model_len=int(self.engine.max_model_len),
                num_kv_blocks=self.engine.stats().num_total_blocks,
                enable_lora=enable_lora,
                device=resolve_device(engine_config.device).type,
            ),
            models=self.models,
            stats=self._load_stats,
            draining=lambda: self.draining,
            heartbeat_interval_s=self.config.heartbeat_interval_s,
            token=self.config.worker_token,
            tls=self.config.tls,
        )
        self._control_task = asyncio.create_task(self.control.run(), name="control-plane-client")

    def _load_stats(self) -> EngineStats:
        return self.engine.stats()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    def request_stop(self) -> None:
        logger.info("stop requested; draining")
        self.servicer.start_draining()
        self._stop_requested.set()

    async def wait_for_termination(self) -> None:
        await self._stop_requested.wait()

    async def stop(self) -> None:
        """Drain and stop: NOT_SERVING, refuse new calls, give in-flight streams the grace period."""
        if self._watch_task is not None and self._watch_task is not asyncio.current_task():
            self._watch_task.cancel()
        self.draining = True
        self.servicer.start_draining()
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.control is not None:
            self.control.send_heartbeat_now()
            await asyncio.sleep(0)
        grace = self.config.shutdown_grace_s
        logger.info("stopping: %d streams in flight, grace %.1fs", self.servicer.num_in_flight, grace)
        # Drain in the servicer, not in grpc's server.stop(grace): while draining, the server still
        # accepts calls and refuses new Generates with UNAVAILABLE (clients retry elsewhere), whereas
        # grpc core cancels calls that race its shutdown (CANCELLED, which clients do not retry).
        start = time.monotonic()
        if not await self.servicer.wait_drained(grace):
            logger.warning(
                "%d streams still running after the %.1fs grace period; cancelling them",
                self.servicer.num_in_flight,
                grace,
            )
        await self.server.stop(max(0.0, grace - (time.monotonic() - start)))
        await self._stop_control_client()
        if self.engine is not None:
            await self.engine.shutdown()
        if self.metrics_server is not None:
            self.metrics_server.close()
        logger.info("worker stopped")

    async def _stop_control_client(self) -> None:
        """End the control-plane stream for good (the control plane marks the worker down)."""
        task, self._control_task = self._control_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _set_health(self, status: int) -> None:
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)


async def serve(config: WorkerServiceConfig, on_ready: Callable[[WorkerServer], None] | None = None) -> int:
    """Run a worker until SIGTERM/SIGINT or its engine dies; `on_ready(server)` is called once it serves.
    Returns an exit code: 0 after a clean drain, EXIT_ENGINE_DEAD after the engine loop died."""
    worker = WorkerServer(config)
    worker.install_signal_handlers()
    startup = asyncio.create_task(worker.start())
    stopper = asyncio.create_task(worker.wait_for_termination())
    await asyncio.wait({startup, stopper}, return_when=asyncio.FIRST_COMPLETED)
    failure = None
    if startup.done():
        failure = startup.exception()
        if failure is None:
            if on_ready is not None:
                on_ready(worker)
            await stopper
    else:
        startup.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await startup
    stopper.cancel()
    await worker.stop()
    if failure is not None:
        raise failure
    return worker.exit_code
