"""Serving the gateway app with uvicorn, in the foreground or as a task of a running event loop."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from loraplane.gateway.api_lora import check_registry_is_guarded
from loraplane.gateway.app import create_app
from loraplane.gateway.config import GatewayConfig
from loraplane.gateway.registry_client import RegistryClient
from loraplane.gateway.workers import WorkerPool

log = logging.getLogger(__name__)


def uvicorn_config(config: GatewayConfig, pool: WorkerPool | None = None, **app_options) -> uvicorn.Config:
    """`app_options`: create_app's keyword arguments (observability, tracer_provider)."""
    return uvicorn.Config(
        create_app(config, pool, **app_options),
        host=config.host,
        port=config.port,
        log_level=config.uvicorn_log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
        lifespan="on",
        ssl_certfile=str(config.https.cert) if config.https.cert else None,
        ssl_keyfile=str(config.https.key) if config.https.key else None,
    )


class BackgroundGateway:
    """A gateway served by uvicorn as a task of the current event loop (tests, benchmarks).

    Semantics: `await start()` returns once the socket is bound and the lifespan ran; `port` is the
    bound port (config.port may be 0); `await stop()` shuts the server down.
    """

    def __init__(self, config: GatewayConfig, pool: WorkerPool | None = None, **app_options) -> None:
        self.config = config
        self.server = uvicorn.Server(uvicorn_config(config, pool, **app_options))
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await check_runtime_updates(self.config)
        self._task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the gateway stopped before it started")
            await asyncio.sleep(0.01)

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task:
            await self._task


async def check_runtime_updates(config: GatewayConfig) -> None:
    """Before serving: RuntimeError when runtime LoRA updating would be open beyond loopback
    (api_lora.check_registry_is_guarded)."""
    if not (config.allow_runtime_lora_updating and config.control_plane):
        return
    registry = RegistryClient(config.control_plane, tls=config.tls)
    try:
        await check_registry_is_guarded(config.host, registry)
    finally:
        await registry.close()


def serve(config: GatewayConfig) -> None:
    """Serve in the foreground until SIGINT/SIGTERM (RuntimeError first if `check_runtime_updates` fails)."""
    asyncio.run(check_runtime_updates(config))
    server = uvicorn.Server(uvicorn_config(config))
    log.info("gateway listening on http://%s:%d", config.host, config.port)
    server.run()
