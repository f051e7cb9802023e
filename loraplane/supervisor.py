"""Child processes for `loraplane serve` and `loraplane up`: start, wait for health, stop together.

Semantics: children run in their own process group (so a terminal's Ctrl-C reaches only the
supervisor, which then stops them in reverse start order: SIGTERM, then SIGKILL after `grace_s`).
`supervise()` returns when a child exits or SIGINT/SIGTERM arrives, and always stops every child.
Health probes are plain gRPC health checks and HTTP GETs; nothing heavy is imported here.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
SAFE_PATH = ["-P"] if sys.version_info >= (3, 11) else []  # python -P: no working directory on sys.path


@dataclass
class Child:
    """A supervised process and where it listens."""

    name: str
    proc: subprocess.Popen
    address: str = ""
    critical: bool = True
    metrics: str = ""  # the URL of its Prometheus metrics, when it serves them
    started_at: float = field(default_factory=time.monotonic)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.started_at

    def listens_on(self, address: str) -> bool:
        """Whether this child itself holds the port of `address` ([scheme://]HOST:PORT)."""
        return listens(self.proc.pid, int(address.rsplit(":", 1)[1]))


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the child binds it right after; good enough on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def listens(pid: int, port: int) -> bool:
    """True when process `pid` holds a listening TCP socket on `port` (Linux /proc; elsewhere True).

    A health probe alone can be answered by another server on the same port; this tells the child's
    own socket from a stranger's, so `ready` is never printed for a child that failed to bind."""
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    fd_dir = Path(f"/proc/{pid}/fd")
    if not fd_dir.is_dir() or not tables[0].exists():
        return True
    inodes = set()
    for table in tables:
        for line in table.read_text().splitlines()[1:] if table.exists() else ():
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    try:
        return any(os.readlink(fd) in inodes for fd in fd_dir.iterdir())
    except OSError:  # an fd closed while we looked, or the process exited
        return False


def grpc_healthy(address: str, service: str = "", timeout_s: float = 1.0, tls=None) -> bool:
    """True when the gRPC server at `address` answers SERVING for `service` (over TLS when `tls`, a
    loraplane.tls.TLSConfig, is enabled)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from loraplane.tls import PLAINTEXT
    from loraplane.tls import channel as open_channel

    with open_channel(address, tls or PLAINTEXT) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def http_ok(url: str, timeout_s: float = 1.0, cafile: str | None = None) -> bool:
    """True when GET `url` answers 200 (an https URL verified against `cafile`, else the system roots)."""
    import ssl

    context = ssl.create_default_context(cafile=cafile) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


class StartupInterrupted(Exception):
    """SIGINT or SIGTERM arrived while the children were starting."""


@dataclass
class Supervisor:
    """Starts children and stops them together.

    Semantics: from the first `start()` until `stop_all()`, SIGINT and SIGTERM only record a stop
    request (children run in their own sessions, so a signal must never leave them orphaned): during
    startup `wait_until` raises StartupInterrupted, afterwards `supervise()` returns 0.
    """

    grace_s: float = 15.0
    children: list[Child] = field(default_factory=list)
    _stopping: bool = False
    _signal: int | None = None
    _previous_handlers: dict = field(default_factory=dict)

    def _on_signal(self, signum, _frame) -> None:
        self._signal = signum

    def _install_signal_handlers(self) -> None:
        if self._previous_handlers or threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    def start(self, name: str, argv: Sequence[str], address: str = "", critical: bool = True) -> Child:
        """Start a child. When a `critical` child exits, `supervise()` stops everything; the others may
        exit alone while one non-critical child (e.g. one of several workers) still lives."""
        self._install_signal_handlers()
        proc = subprocess.Popen(list(argv), start_new_session=True)
        child = Child(name, proc, address, critical)
        self.children.append(child)
        log.info("started %s (pid %d)%s", name, proc.pid, f" on {address}" if address else "")
        return child

    def python_module(self, name: str, args: Sequence[str], **kwargs) -> Child:
        """Start `python -P -m loraplane <args>` (the same interpreter as this process).

        `-P` keeps the working directory off `sys.path`: started from a loraplane checkout, the bare
        component folders (`kernels/`, `gateway/`) would otherwise shadow other distributions' packages
        of those names (transformers imports Hugging Face's `kernels`)."""
        return self.start(name, [sys.executable, *SAFE_PATH, "-m", "loraplane", *args], **kwargs)

    def wait_until(self, child: Child, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll `ready()` until it is true; RuntimeError when the child dies or `timeout_s` passes."""
        deadline = time.monotonic() + timeout_s
        while not ready():
            if self._signal is not None:
                raise StartupInterrupted(f"received {signal.Signals(self._signal).name} while starting")
            if not child.alive:
                raise RuntimeError(f"{child.name} exited with code {child.proc.returncode} before {what}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} did not become {what} within {timeout_s:.0f} s")
            time.sleep(0.2)

    def check_alive(self) -> None:
        """RuntimeError naming the first child that has exited (called before announcing `ready`)."""
        for child in self.children:
            if not child.alive:
                raise RuntimeError(f"{child.name} exited with code {child.proc.returncode} while starting")

    def supervise(self) -> int:
        """Block until a child exits or SIGINT/SIGTERM; then stop all. Returns the exit code to use."""
        self._install_signal_handlers()
        try:
            reported: set[str] = set()
            while self._signal is None:
                dead = [c for c in self.children if not c.alive]
                fatal = next((c for c in dead if c.critical), None)
                if fatal is None and dead and all(not c.alive for c in self.children if not c.critical):
                    fatal = dead[0]
                if fatal is not None:
                    log.error(
                        "%s exited with code %s; stopping the others", fatal.name, fatal.proc.returncode
                    )
                    return 1
                for child in dead:
                    if child.name not in reported:
                        reported.add(child.name)
                        log.warning(
                            "%s exited with code %s; the others keep serving",
                            child.name,
                            child.proc.returncode,
                        )
                time.sleep(0.2)
            log.info("received %s; stopping", signal.Signals(self._signal).name)
            return 0
        finally:
            self.stop_all()

    def stop_all(self) -> None:
        """Stop every live child, last started first (edge before workers before the control plane, so
        no process logs the loss of one already stopped): SIGTERM, wait, SIGKILL after `grace_s` in all."""
        if self._stopping:
            return
        self._stopping = True
        try:
            self._stop_children()
        finally:
            self._restore_signal_handlers()

    def _stop_children(self) -> None:
        deadline = time.monotonic() + self.grace_s
        for child in reversed(self.children):
            if not child.alive:
                continue
            child.proc.send_signal(signal.SIGTERM)
            try:
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", child.name, self.grace_s)
                child.proc.kill()
                child.proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m loraplane.supervisor --grpc HOST:PORT [--service S]` or `--http URL`."""
    parser = argparse.ArgumentParser(description="exit 0 when a loraplane process is healthy")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--grpc", help="gRPC HOST:PORT answering grpc.health.v1")
    target.add_argument("--http", help="URL answering 200")
    parser.add_argument("--service", default="", help="gRPC health service name (default: overall)")
    args = parser.parse_args(argv)
    healthy = grpc_healthy(args.grpc, args.service, 3.0) if args.grpc else http_ok(args.http, 3.0)
    return 0 if healthy else 1


if __name__ == "__main__":
    raise SystemExit(main())
