"""An ASGI middleware that refuses request bodies over a size limit with 413, before anything parses them.

Semantics: a request whose Content-Length exceeds `max_bytes` is refused without reading its body. Any
other body (chunked, without Content-Length) is counted as it arrives and refused as soon as the count
passes `max_bytes`. A body within the limit reaches the app unchanged: one `http.request` message with
all of it, then the client's later messages (the disconnect the streaming routes wait for). The refusal
is whatever `refuse(request)` answers (the app's OpenAI error, counted and logged like any other).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class BodyLimit:
    """Pure ASGI middleware (no BaseHTTPMiddleware: it must see the body before the app reads it)."""

    def __init__(self, app: ASGIApp, max_bytes: int, refuse: Callable[[Request], Response]) -> None:
        self.app, self.max_bytes, self.refuse = app, max_bytes, refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self.refuse(Request(scope))(scope, receive, send)
            return
        body = await self._read(receive)
        if body is None:
            await self.refuse(Request(scope))(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes the limit (a client gone mid-body gives what came)."""
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(parts)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
