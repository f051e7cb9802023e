"""Checking, before any slow start-up work, that the ports a command will listen on are free.

Semantics: `check_ports([(host, port, flag), ...])` binds each (host, port) once, the way the servers
will (SO_REUSEADDR as uvicorn and grpc core set it; no SO_REUSEPORT, which loraplane's gRPC servers turn
off), and releases it at once. A port another process listens on raises `PortInUseError` whose message
names the port and the flag that changes it, e.g. "port 8000 is in use (another server?): pass --port to
choose another". Port 0 (any free port) is always fine. The check cannot reserve the port: a process
that takes it between the check and the bind still makes the server fail, later.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable


class PortInUseError(RuntimeError):
    """A port a command is about to listen on is taken (or may not be bound by this user)."""


def _bind_error(host: str, port: int) -> OSError | None:
    """The error binding (host, port) gives now, or None when it binds."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return exc
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(infos[0][4])
        except OSError as exc:
            return exc
    return None


def check_port(host: str, port: int, flag: str) -> None:
    """Raise PortInUseError (naming `port` and `flag`) unless (host, port) can be bound now."""
    if port == 0:
        return
    error = _bind_error(host, port)
    if error is None:
        return
    if error.errno == errno.EADDRINUSE:
        raise PortInUseError(f"port {port} is in use (another server?): pass {flag} to choose another")
    if error.errno == errno.EACCES:
        raise PortInUseError(f"port {port} needs privileges to bind on {host}: pass {flag} to choose another")
    raise PortInUseError(f"cannot listen on {host}:{port} ({error}): check {flag}")


def check_ports(ports: Iterable[tuple[str, int, str]]) -> None:
    """`check_port` for each (host, port, flag); the first taken one raises."""
    for host, port, flag in ports:
        check_port(host, port, flag)
