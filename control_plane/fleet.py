"""Connected workers: one `WorkerSession` per open command stream, and the `Fleet` that holds them.

A session is transport-free: the WorkerControl servicer drains `session.outbox` onto the stream and
feeds the worker's answers into `session.resolve`. Commands are matched to answers by command id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from loraplane.control_plane.commands import Command, CommandOutcome, HelloInfo
from loraplane.control_plane.errors import ControlPlaneError

logger = logging.getLogger(__name__)


class WorkerGoneError(Exception):
    """The worker's stream closed before it answered."""


class WorkerIdInUseError(ControlPlaneError):
    """A Hello named a worker id whose stream is still open (ALREADY_EXISTS)."""


class WorkerSession:
    """One open command stream. `last_seen` is refreshed by every message from the worker."""

    def __init__(self, hello: HelloInfo) -> None:
        self.hello = hello
        self.outbox: asyncio.Queue[Command] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.last_seen = time.monotonic()
        self._pending: dict[str, tuple[Command, asyncio.Future[CommandOutcome]]] = {}
        self.on_send: Callable[[Command, asyncio.Future[CommandOutcome]], None] | None = None  # metrics

    @property
    def worker_id(self) -> str:
        return self.hello.worker_id

    @property
    def base_model_name(self) -> str:
        return self.hello.base_model_name

    def send(self, command: Command) -> asyncio.Future[CommandOutcome]:
        """Queue a command; the future resolves with the worker's answer (WorkerGoneError if it leaves)."""
        future: asyncio.Future[CommandOutcome] = asyncio.get_running_loop().create_future()
        if self.closed.is_set():
            future.set_exception(WorkerGoneError(self.close_reason))
            return future
        self._pending[command.command_id] = (command, future)
        self.outbox.put_nowait(command)
        if self.on_send is not None:
            self.on_send(command, future)
        return future

    def resolve(self, outcome: CommandOutcome) -> Command | None:
        """Deliver an answer; returns the command it answers (None when no such command is pending)."""
        entry = self._pending.pop(outcome.command_id, None)
        if entry is None:
            return None
        command, future = entry
        if not future.done():
            future.set_result(outcome)
        return command

    def close(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(WorkerGoneError(reason))
                future.exception()  # mark retrieved: nobody may be awaiting it
        self._pending.clear()


class Fleet:
    """The open sessions by worker id.

    A worker id belongs to its open stream: a second Hello with a live worker's id is refused
    (WorkerIdInUseError), so a stranger cannot take over a worker's traffic or make it flap. A worker
    that lost its stream reconnects once the control plane has noticed (the stream's end, or its
    heartbeat timeout)."""

    def __init__(
        self, on_send: Callable[[Command, asyncio.Future[CommandOutcome]], None] | None = None
    ) -> None:
        self._sessions: dict[str, WorkerSession] = {}
        self.on_send = on_send  # handed to every attached session (the control plane's metrics)

    def attach(self, session: WorkerSession) -> None:
        old = self._sessions.get(session.worker_id)
        if old is not None and not old.closed.is_set():
            raise WorkerIdInUseError(
                f"worker id {session.worker_id!r} is held by a connected worker; give each worker "
                "its own --worker-id, or retry once the old stream has closed"
            )
        session.on_send = self.on_send
        self._sessions[session.worker_id] = session

    def detach(self, session: WorkerSession) -> bool:
        """Forget the session if it is still the current one for its worker id."""
        if self._sessions.get(session.worker_id) is session:
            del self._sessions[session.worker_id]
            return True
        return False

    def get(self, worker_id: str) -> WorkerSession | None:
        return self._sessions.get(worker_id)

    def sessions(self) -> list[WorkerSession]:
        return list(self._sessions.values())

    def serving(self, base_model_name: str) -> list[WorkerSession]:
        """Sessions whose worker should hold an adapter of `base_model_name` (empty = every worker)."""
        return [
            s for s in self._sessions.values() if not base_model_name or s.base_model_name == base_model_name
        ]


async def broadcast(
    sessions: Iterable[WorkerSession], make_command: Callable[[WorkerSession], Command], timeout: float
) -> dict[str, CommandOutcome | None]:
    """Send one command per session and wait up to `timeout` s; None marks no answer (or gone)."""
    futures = {session.worker_id: session.send(make_command(session)) for session in sessions}
    if futures:
        await asyncio.wait(futures.values(), timeout=timeout)
    results: dict[str, CommandOutcome | None] = {}
    for worker_id, future in futures.items():
        if future.done() and future.exception() is None:
            results[worker_id] = future.result()
        else:
            results[worker_id] = None
    return results
