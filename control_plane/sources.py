"""Turn a requested adapter source into a checked one: allowed location, readable PEFT adapter."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from loraplane.adapter_format import AdapterSourceNotFoundError, resolve_adapter_path
from loraplane.control_plane.config import ControlPlaneConfig
from loraplane.control_plane.errors import InvalidArgumentError, SourceNotFoundError
from loraplane.control_plane.records import AdapterSourceRef
from loraplane.control_plane.validation import (
    CheckedAdapter,
    check_adapter_dir,
    check_hub_id,
    resolve_local_source,
)

T = TypeVar("T")


async def resolve_source(
    source: AdapterSourceRef, config: ControlPlaneConfig
) -> tuple[AdapterSourceRef, CheckedAdapter]:
    """The stored form of `source` (a resolved local path, or the hub id) and what its files hold.

    Hashing, validation and hub downloads run off the event loop (`_off_loop`), so reads keep being
    served, a cancelled create stops waiting at once (releasing the name's lock) and a stop is never
    held up by a check still running.
    """
    stored = stored_source(source, config)
    if stored.path:
        label = source.path[:300]
        checked = await _off_loop(check_adapter_dir, Path(stored.path), label, config.adapter_roots)
    else:
        checked = await _off_loop(_check_hub, stored.hub_id, stored.revision)
    return stored, checked


def stored_source(source: AdapterSourceRef, config: ControlPlaneConfig) -> AdapterSourceRef:
    """The form a record stores `source` in (a real path under a root, or the hub id), without reading
    the adapter's files; raises what a create of that source would raise."""
    if source.path and source.hub_id:
        raise InvalidArgumentError("give either a source path or a hub id, not both")
    if source.path:
        return AdapterSourceRef(path=str(resolve_local_source(source.path, config.adapter_roots)))
    if source.hub_id:
        hub_id = check_hub_id(source.hub_id, config.allow_hub_sources)
        return AdapterSourceRef(hub_id=hub_id, revision=source.revision)
    raise InvalidArgumentError("the adapter has no source; give a local directory path (or a hub id)")


def _check_hub(hub_id: str, revision: str) -> CheckedAdapter:
    try:
        directory = resolve_adapter_path(hub_id, revision=revision or None)
    except AdapterSourceNotFoundError as exc:
        raise SourceNotFoundError(str(exc)) from exc
    return check_adapter_dir(directory, hub_id)


async def _off_loop(check: Callable[..., T], *args: object) -> T:
    """`check(*args)` in a daemon thread. Unlike `asyncio.to_thread`, whose pool threads the interpreter
    joins at exit, an abandoned check (the caller cancelled, the server is stopping) cannot delay a
    SIGTERM; the work itself is bounded (linear-time patterns, one pass over the files)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():  # cancelled meanwhile: nobody waits for this answer
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            outcome: tuple[T | None, BaseException | None] = (check(*args), None)
        except BaseException as exc:  # handed to the awaiting coroutine, which re-raises it
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop closed while the check ran: no reader left
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name="adapter-check", daemon=True).start()
    return await future
