"""POST /v1/load_lora_adapter and /v1/unload_lora_adapter with vLLM's bodies, replies and messages.

Semantics: both go through the control plane (CreateAdapter / DeleteAdapter), so the change is stored
and reaches every worker of the base model, not just one process as in vLLM. Success is HTTP 200 with
vLLM's plain-text body. Errors are vLLM's: a taken name -> 400 "has already been loaded"; a path with
no adapter -> 404; an adapter that cannot be loaded -> 400 naming the problem (vLLM answers 500);
unloading an unknown name -> 404. The router is mounted only when runtime updates are enabled.

Auth: the caller's `X-Admin-Token` (when the gateway has an API key, `Authorization` carries that key),
else its `Authorization: Bearer <token>`, is forwarded to the control plane, which checks it
against its admin token; the gateway holds no token of its own to lend. A control plane with an admin
token answers a missing or wrong one with UNAUTHENTICATED -> 401; one without lets every caller in,
which only a gateway on loopback accepts: beyond loopback, `check_registry_is_guarded` stops the gateway
at start-up unless the control plane refuses a tokenless write.
"""

from __future__ import annotations

import logging

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from loraplane.gateway.errors import OpenAIError, from_grpc
from loraplane.gateway.protocol import LoadLoRAAdapterRequest, UnloadLoRAAdapterRequest

router = APIRouter()
log = logging.getLogger(__name__)
ADMIN_TOKEN_HEADER = "x-admin-token"  # the admin token when Authorization carries the API key


async def check_registry_is_guarded(host: str, registry) -> None:
    """RuntimeError when the gateway listens beyond loopback and the control plane lets a tokenless caller
    write: it is asked to delete the adapter named "" with no token, which a guarded control plane refuses
    with UNAUTHENTICATED before looking at the name (an open one answers INVALID_ARGUMENT, changing
    nothing). An unreachable control plane is only logged: it enforces its own token once it is up."""
    from loraplane.control_plane.config import is_loopback

    if is_loopback(host):
        return
    try:
        await registry.delete_adapter("")
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            return
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            log.warning("cannot check that the control plane guards adapter changes: %s", exc.details())
            return
    raise RuntimeError(
        f"runtime LoRA updating on {host} (beyond loopback) needs a control plane with an admin token, or "
        "anyone who reaches the gateway can change adapters: set LORAPLANE_ADMIN_TOKEN for the control plane"
    )


def _caller_token(request: Request) -> str | None:
    """The caller's admin token: the `X-Admin-Token` header when sent (with an API key on the gateway,
    `Authorization` carries that key), else the bearer token; None when absent or not sendable as gRPC
    metadata (printable ASCII), which the control plane then treats as no credential."""
    token = request.headers.get(ADMIN_TOKEN_HEADER, "").strip()
    if not token:
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        token = bearer.strip() if scheme.lower() == "bearer" else ""
    if not token or not all(" " <= c <= "~" for c in token):
        return None
    return token


def _unauthenticated(request: Request) -> OpenAIError:
    return OpenAIError(
        401,
        f"{request.url.path} needs the control plane's admin token: send the header "
        "'Authorization: Bearer <admin token>' (the LORAPLANE_ADMIN_TOKEN the control plane runs with), or "
        f"'{ADMIN_TOKEN_HEADER}: <admin token>' when Authorization carries the gateway's API key",
    )


def _registry(request: Request):
    registry = request.app.state.gateway.registry
    if registry is None:
        raise OpenAIError(
            503, "runtime adapter changes need a control plane (start the gateway with --control-plane)"
        )
    return registry


@router.post("/v1/load_lora_adapter")
async def load_lora_adapter(body: LoadLoRAAdapterRequest, request: Request) -> PlainTextResponse:
    name, path = body.lora_name, body.lora_path
    if not name or not path:
        raise OpenAIError(400, "Both 'lora_name' and 'lora_path' must be provided.", type="InvalidUserInput")
    registry = _registry(request)
    try:
        result = await registry.create_adapter(
            name, path, body.base_model_name, replace=body.load_inplace, token=_caller_token(request)
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            raise _unauthenticated(request) from exc
        raise _load_error(exc, name, path) from exc
    if result.failed and not result.loaded:
        reasons = "; ".join(result.failure_reasons) or result.message
        raise OpenAIError(400, f"Loading lora {name} failed: {reasons}", "lora_path")
    await request.app.state.gateway.pool.refresh()
    return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")


def _load_error(exc: grpc.aio.AioRpcError, name: str, path: str) -> OpenAIError:
    code = exc.code()
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return OpenAIError(
            400,
            f"The lora adapter '{name}' has already been loaded. If you want to load the adapter in place, "
            "set 'load_inplace' to True.",
            "lora_name",
            "InvalidUserInput",
        )
    if code == grpc.StatusCode.NOT_FOUND:
        detail = exc.details() or ""
        return OpenAIError(
            404, f"Loading lora {name} failed: No adapter found for {path}. {detail}".strip(), "lora_path"
        )
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
        return OpenAIError(400, f"Loading lora {name} failed: {exc.details()}", "lora_path")
    return from_grpc(exc, "lora_path")


@router.post("/v1/unload_lora_adapter")
async def unload_lora_adapter(body: UnloadLoRAAdapterRequest, request: Request) -> PlainTextResponse:
    name = body.lora_name
    if not name:
        raise OpenAIError(
            400, "'lora_name' needs to be provided to unload a LoRA adapter.", type="InvalidUserInput"
        )
    registry = _registry(request)
    try:
        await registry.delete_adapter(name, token=_caller_token(request))
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            raise _unauthenticated(request) from exc
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            raise OpenAIError(404, f"The lora adapter '{name}' cannot be found.", "lora_name") from exc
        raise from_grpc(exc, "lora_name") from exc
    await request.app.state.gateway.pool.refresh()
    return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")
