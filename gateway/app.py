"""The FastAPI application: routes, error handlers, and the lifecycle of the worker pool.

Semantics: `create_app(config)` builds an app whose lifespan connects to the control plane (when
configured), discovers workers, and refreshes them in the background. Every error a client sees is
an OpenAI error object; validation errors are 400; bodies over `max_request_bytes` are 413 before they
are parsed; unexpected exceptions are logged and answered 500 with a fixed message (no type, text or
traceback). The runtime LoRA routes are mounted only when `allow_runtime_lora_updating`.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from loraplane.gateway import api_generate, api_lora, api_tokens
from loraplane.gateway.auth import ApiKeyAuth
from loraplane.gateway.body_limit import BodyLimit
from loraplane.gateway.config import ENV_RUNTIME_LORA, GatewayConfig
from loraplane.gateway.errors import GENERIC_INTERNAL, OpenAIError, request_too_large
from loraplane.gateway.metrics import ArrivalStamp, GatewayMetrics
from loraplane.gateway.registry_client import RegistryClient
from loraplane.gateway.request_log import RequestLog
from loraplane.gateway.workers import WorkerPool
from loraplane.observability import ObservabilityConfig, config_from_env
from loraplane.tracing import provider_for

log = logging.getLogger(__name__)
RUNTIME_LORA_PATHS = frozenset({"/v1/load_lora_adapter", "/v1/unload_lora_adapter"})
KNOWN_ENDPOINTS = RUNTIME_LORA_PATHS | {"/v1/completions", "/v1/chat/completions", "/v1/models"}


@dataclass
class GatewayState:
    """What request handlers reach through `request.app.state.gateway`."""

    config: GatewayConfig
    pool: WorkerPool
    registry: RegistryClient | None
    metrics: GatewayMetrics


def _model_json(card) -> dict:
    is_adapter = bool(card.parent)
    return {
        "id": card.id,
        "object": "model",
        "created": card.created,
        "owned_by": card.owned_by or "loraplane",
        "root": card.root or card.id,
        "parent": card.parent or None,
        "max_model_len": None if is_adapter else (card.max_model_len or None),
        "permission": [_permission(card.created)],
    }


def _permission(created: int) -> dict:
    """vLLM's ModelPermission entry (clients that read it find the same fields)."""
    return {
        "id": f"modelperm-{uuid.uuid4().hex}",
        "object": "model_permission",
        "created": created,
        "allow_create_engine": False,
        "allow_sampling": True,
        "allow_logprobs": True,
        "allow_search_indices": False,
        "allow_view": True,
        "allow_fine_tuning": False,
        "organization": "*",
        "group": None,
        "is_blocking": False,
    }


def _validation_error(request: Request, errors: Sequence[dict]) -> OpenAIError:
    """A 400 naming what is wrong: bad JSON, a body that is not JSON, or the fields that do not fit."""
    content_type = request.headers.get("content-type", "")
    if errors and errors[0].get("type") == "json_invalid":
        reason = errors[0].get("ctx", {}).get("error", "")
        position = errors[0].get("loc", ("body", "?"))[-1]
        return OpenAIError(400, f"the request body is not valid JSON: {reason} at character {position}")
    if "json" not in content_type.split(";")[0]:
        return OpenAIError(
            400,
            f"Unsupported Media Type: Only 'application/json' is allowed (got {content_type or 'none'}); "
            "send the body as JSON with the header Content-Type: application/json",
        )
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}" for e in errors
    )
    first = errors[0].get("loc", ()) if errors else ()
    param = str(first[1]) if len(first) > 1 else None
    return OpenAIError(400, problems or "invalid request", param)


def _http_error(request: Request, exc: StarletteHTTPException) -> OpenAIError:
    """Routing errors (unknown path, wrong method) as OpenAI errors; the runtime LoRA routes say how to
    turn them on (vLLM answers a bare 404 there)."""
    path = request.url.path
    if exc.status_code == 404 and path in RUNTIME_LORA_PATHS:
        return OpenAIError(
            404,
            f"{path} is off: runtime LoRA updating is disabled; start the server with "
            f"{ENV_RUNTIME_LORA}=true to load and unload adapters at run time",
        )
    if exc.status_code == 404:
        return OpenAIError(404, f"no route {request.method} {path}; see /docs for the API")
    if exc.status_code == 405:
        return OpenAIError(405, f"{request.method} is not allowed on {path}")
    return OpenAIError(exc.status_code, str(exc.detail))


def _respond(request: Request, error: OpenAIError, headers: dict | None = None) -> JSONResponse:
    """Count (endpoint label bounded to the known routes), log one line, and answer `error`."""
    path = request.url.path
    endpoint = path if path in KNOWN_ENDPOINTS else "other"
    request.app.state.gateway.metrics.requests.labels(endpoint, str(error.status)).inc()
    log.info("%s %s -> %d %s", request.method, path, error.status, error.message)
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpenAIError)
    async def openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
        return _respond(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _respond(request, _validation_error(request, exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _respond(request, _http_error(request, exc), exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error serving %s", request.url.path)
        return _respond(request, OpenAIError(500, GENERIC_INTERNAL))


def create_app(
    config: GatewayConfig,
    pool: WorkerPool | None = None,
    observability: ObservabilityConfig | None = None,
    tracer_provider: Any = None,
) -> FastAPI:
    """The gateway app for `config`; pass `pool` to reuse an existing (started) worker pool in tests.
    Request logs and tracing follow `observability` (default: as the `loraplane` command exported it);
    `tracer_provider` replaces the one its `otlp_traces_endpoint` would give (tests)."""
    observability = observability or config_from_env()
    tracer_provider = tracer_provider or provider_for(observability, "loraplane-gateway")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        registry = RegistryClient(config.control_plane, tls=config.tls) if config.control_plane else None
        own_pool = pool is None
        worker_pool = pool or WorkerPool(config, registry)
        if own_pool:
            await worker_pool.start()
        app.state.gateway = GatewayState(
            config, worker_pool, registry, GatewayMetrics(config.max_adapter_labels)
        )
        try:
            yield
        finally:
            if own_pool:
                await worker_pool.close()
            if registry is not None:
                await registry.close()

    app = FastAPI(title="loraplane gateway", lifespan=lifespan)
    app.include_router(api_generate.router)
    app.include_router(api_tokens.router)
    if config.allow_runtime_lora_updating:
        log.warning(
            "runtime LoRA updating is enabled (LORAPLANE_ALLOW_RUNTIME_LORA_UPDATING): callers of "
            "/v1/load_lora_adapter act with the Authorization header they send; a control plane without an "
            "admin token lets anyone who can reach the gateway register adapters"
        )
        app.include_router(api_lora.router)
    _add_error_handlers(app)
    app.add_middleware(
        BodyLimit,
        max_bytes=config.max_request_bytes,
        refuse=lambda request: _respond(request, request_too_large(config.max_request_bytes)),
    )
    if config.api_key:  # outside BodyLimit: a caller without the key is refused before its body is read
        app.add_middleware(
            ApiKeyAuth,
            api_key=config.api_key,
            refuse=lambda request, message: _respond(request, OpenAIError(401, message)),
        )
    app.add_middleware(
        RequestLog,
        config=observability,
        refuse=lambda request, message: _respond(request, OpenAIError(400, message)),
        tracer_provider=tracer_provider,
    )
    app.add_middleware(ArrivalStamp)  # added last, so outermost: timings start before the body is read

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        cards = await request.app.state.gateway.pool.list_models()
        return JSONResponse({"object": "list", "data": [_model_json(c) for c in cards]})

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        pool = request.app.state.gateway.pool
        healthy = sum(1 for w in pool.workers.values() if w.healthy)
        status = 200 if healthy else 503
        return JSONResponse({"status": "ok" if healthy else "no_workers", "workers": healthy}, status)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        state = request.app.state.gateway
        state.metrics.set_workers(list(state.pool.workers.values()))
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")

    return app
