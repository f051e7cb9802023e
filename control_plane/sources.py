"""Turn a requested adapter source into a checked one: allowed location, readable PEFT adapter."""

from __future__ import annotations

import asyncio

from loraplane.control_plane.config import ControlPlaneConfig
from loraplane.control_plane.errors import InvalidArgumentError, SourceNotFoundError
from loraplane.control_plane.records import AdapterSourceRef
from loraplane.control_plane.validation import (
    CheckedAdapter,
    check_adapter_dir,
    check_hub_id,
    resolve_local_source,
)

from loraplane.adapter_format import AdapterSourceNotFoundError, resolve_adapter_path


async def resolve_source(
    source: AdapterSourceRef, config: ControlPlaneConfig
) -> tuple[AdapterSourceRef, CheckedAdapter]:
    """The stored form of `source` (a resolved local path, or the hub id) and what its files hold.

    Hashing and hub downloads run in a thread so the event loop keeps serving.
    """
    if source.path and source.hub_id:
        raise InvalidArgumentError("give either a source path or a hub id, not both")
    if source.path:
        directory = resolve_local_source(source.path, config.adapter_roots)
        label = source.path[:300]
        checked = await asyncio.to_thread(check_adapter_dir, directory, label, config.adapter_roots)
        return AdapterSourceRef(path=str(directory)), checked
    if source.hub_id:
        hub_id = check_hub_id(source.hub_id, config.allow_hub_sources)
        checked = await asyncio.to_thread(_check_hub, hub_id, source.revision)
        return AdapterSourceRef(hub_id=hub_id, revision=source.revision), checked
    raise InvalidArgumentError("the adapter has no source; give a local directory path (or a hub id)")


def _check_hub(hub_id: str, revision: str) -> CheckedAdapter:
    try:
        directory = resolve_adapter_path(hub_id, revision=revision or None)
    except AdapterSourceNotFoundError as exc:
        raise SourceNotFoundError(str(exc)) from exc
    return check_adapter_dir(directory, hub_id)
