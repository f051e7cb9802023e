"""The OpenAI API key (vLLM's `--api-key`): where it comes from, and the middleware that checks it.

Semantics: with a key set, every request needs `Authorization: Bearer <key>`, except the open paths
(`OPEN_PATHS`: health, liveness, version, metrics and the API docs), which probes and scrapers reach
without one. A missing or wrong key is a 401 OpenAI error object, before the body is read. The key is
compared in constant time. Without a key every path is open, as in vLLM.

The key is read, first found wins, from `--api-key-file PATH`, `--api-key KEY` (accepted because vLLM
users pass it by habit, with a warning: `ps` shows every argument to every local user), then the
environment: `LORAPLANE_API_KEY`, else vLLM's `VLLM_API_KEY`. `loraplane serve` and `up` hand it to
their gateway through the environment, never its command line.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLIs import the flags from here; starlette loads only with the gateway
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

ENV_API_KEY = "LORAPLANE_API_KEY"
VLLM_ENV_API_KEY = "VLLM_API_KEY"
OPEN_PATHS = frozenset(
    {"/health", "/ping", "/version", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
ARGUMENT_WARNING = (
    "--api-key on the command line is visible to every local user (ps); set LORAPLANE_API_KEY (or "
    "VLLM_API_KEY) or pass --api-key-file instead"
)


def add_api_key_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help=f"require 'Authorization: Bearer KEY' on the OpenAI routes; prefer env {ENV_API_KEY} (or "
        f"{VLLM_ENV_API_KEY}) or --api-key-file: arguments show in `ps`",
    )
    parser.add_argument(
        "--api-key-file", default=None, metavar="PATH", help="file holding the API key (first line)"
    )


def api_key_from(args: argparse.Namespace, environ=os.environ) -> str | None:
    """The API key per the module docstring; ValueError for an unreadable or empty key file."""
    path = getattr(args, "api_key_file", None)
    if path:
        try:
            key = Path(path).expanduser().read_text().strip()
        except OSError as exc:
            raise ValueError(f"--api-key-file {path}: {exc.strerror or exc}") from None
        if not key:
            raise ValueError(f"--api-key-file {path} is empty")
        return key
    if getattr(args, "api_key", None):
        log.warning(ARGUMENT_WARNING)
        return args.api_key
    return environ.get(ENV_API_KEY) or environ.get(VLLM_ENV_API_KEY) or None


def _bearer(scope: Scope) -> bytes:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else b""
    return b""


class ApiKeyAuth:
    """Pure ASGI middleware; `refuse(request, message)` answers the 401 (the app's OpenAI error)."""

    def __init__(self, app: ASGIApp, api_key: str, refuse: Callable[[Request, str], Response]) -> None:
        self.app, self.key, self.refuse = app, api_key.encode(), refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        if token and hmac.compare_digest(token, self.key):
            await self.app(scope, receive, send)
            return
        message = (
            "Incorrect API key provided: send 'Authorization: Bearer <key>' with the server's API key"
            if token
            else "Missing API key: send 'Authorization: Bearer <key>' with the server's API key"
        )
        from starlette.requests import Request

        await self.refuse(Request(scope), message)(scope, receive, send)
