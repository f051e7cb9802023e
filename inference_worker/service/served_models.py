"""The names a worker serves (its base model and active adapters) and the adapter operations on them.

Requests name adapters by their public name; the engine's LoRA manager knows each loaded adapter by an
internal name. The two are equal except during a staged replace: the new version is loaded next to the
old one under `name@<version prefix>` and the public name switches to it on `activate`, so requests are
never refused while an adapter is replaced. No protobuf here: the servicer and the control-plane client
convert their messages to these calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from loraplane.inference_worker.engine_client import EngineClient
from loraplane.inference_worker.errors import (
    AdapterLoadError,
    AdapterNotFoundError,
    InvalidRequestError,
    ModelNotFoundError,
)
from loraplane.inference_worker.lora import LoRARequest

if TYPE_CHECKING:
    from loraplane.inference_worker.lora import AdapterInfo

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedAdapter:
    """An adapter as requests see it: public `name`, the engine-side request, lineage and version."""

    name: str
    lora_request: LoRARequest
    root: str
    version: str
    base_model_name: str | None = None
    pinned: bool = False
    created: int = 0


@dataclass(frozen=True)
class AdapterTarget:
    """What an adapter should be: the worker-side form of a load command or a `--lora-modules` item."""

    name: str
    source: str
    version: str = ""
    base_model_name: str | None = None
    pinned: bool = False


@dataclass(frozen=True)
class Residency:
    """One held adapter for heartbeats: public name, version, tier (AdapterInfo.tier), pinned."""

    name: str
    version: str
    tier: str
    pinned: bool


class ServedModels:
    """The base model and the adapters this worker serves, kept in step with the engine's LoRA manager.

    Semantics: `resolve(model)` maps a request's `model` field to `None` (the base model; empty string or
    the base name) or the active adapter's `LoRARequest`, else raises ModelNotFoundError. `load`,
    `unload` and `reconcile` are serialized per adapter name and never block the event loop (the
    engine loads weights in the background). An unloaded name stops resolving at once; requests already
    running on it finish.
    """

    def __init__(self, engine: EngineClient, base_name: str, base_root: str, enable_lora: bool) -> None:
        self.engine = engine
        self.base_name = base_name
        self.base_root = base_root
        self.enable_lora = enable_lora
        self.created = int(time.time())
        self._active: dict[str, ServedAdapter] = {}
        self._staged: dict[str, ServedAdapter] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._ids = itertools.count(1)
        self.load_timer = contextlib.nullcontext  # times each engine load (the worker's metrics)

    def resolve(self, model: str) -> LoRARequest | None:
        if not model or model == self.base_name:
            return None
        adapter = self._active.get(model)
        if adapter is None:
            available = ", ".join([self.base_name, *sorted(self._active)])
            raise ModelNotFoundError(f"model {model!r} is not served by this worker; available: {available}")
        return adapter.lora_request

    def adapters(self) -> list[ServedAdapter]:
        """The active adapters, by name."""
        return [self._active[name] for name in sorted(self._active)]

    def residency(self) -> list[Residency]:
        """Active adapters with the tier the engine reports for each."""
        infos = {info.name: info for info in self.engine.list_loras()} if self.enable_lora else {}
        held = []
        for adapter in self.adapters():
            info = infos.get(adapter.lora_request.lora_name)
            if info is not None:
                held.append(Residency(adapter.name, adapter.version, info.tier, bool(info.pinned)))
        return held

    async def load(self, target: AdapterTarget, stage_only: bool = False, activate: bool = False) -> None:
        """Load (or replace, or stage, or activate) one adapter; engine errors propagate."""
        self._require_lora()
        if target.name == self.base_name:  # requests for this name reach the base model: never usable
            raise AdapterLoadError(
                f"adapter name {target.name!r} is this worker's base model name; pick another name",
                field="name",
            )
        async with self._lock(target.name):
            current = self._active.get(target.name)
            if current is not None and self._same(current, target):
                self._active[target.name] = await self._pin(current, target.pinned)
                return
            staged = self._staged.get(target.name)
            if activate and staged is not None and (not target.version or staged.version == target.version):
                await self._switch(self._staged.pop(target.name))
                return
            adapter = await self._add(target, replacing=current is not None or staged is not None)
            if stage_only:
                if staged is not None:
                    await self._drop(staged)
                self._staged[target.name] = adapter
                return
            await self._switch(adapter)

    async def unload(self, name: str, version: str = "") -> None:
        """Stop serving `name` (only if its version is `version`, when given); AdapterNotFoundError if
        it is not held."""
        async with self._lock(name):
            dropped = []
            for table in (self._active, self._staged):
                adapter = table.get(name)
                if adapter is not None and (not version or adapter.version == version):
                    dropped.append(table.pop(name))
            if not dropped:
                what = f"adapter {name!r}" + (f" version {version[:12]}" if version else "")
                raise AdapterNotFoundError(f"{what} is not loaded on this worker")
            for adapter in dropped:
                await self._drop(adapter)

    async def reconcile(self, targets: Iterable[AdapterTarget]) -> dict[str, Exception]:
        """Make the active set equal `targets`: drop the rest, load what is missing or changed.

        Returns the failures by adapter name (empty when everything succeeded).
        """
        wanted = {t.name: t for t in targets}
        extra = [n for n in {*self._active, *self._staged} if n not in wanted]
        jobs = [self.unload(name) for name in extra] + [self.load(t) for t in wanted.values()]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        names = extra + list(wanted)
        failures = {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, Exception):
                failures[name] = result
        return failures

    def _require_lora(self) -> None:
        if not self.enable_lora:
            raise InvalidRequestError(
                "LoRA is disabled on this worker; start it with --enable-lora", param="enable_lora"
            )

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    @staticmethod
    def _same(adapter: ServedAdapter, target: AdapterTarget) -> bool:
        if target.version:
            return adapter.version == target.version
        return adapter.root == target.source

    async def _add(self, target: AdapterTarget, replacing: bool) -> ServedAdapter:
        internal = (
            f"{target.name}@{(target.version or str(next(self._ids)))[:16]}" if replacing else target.name
        )
        request = LoRARequest(internal, next(self._ids), target.source, target.base_model_name)
        with self.load_timer():
            await self.engine.add_lora(request)
        version = self._info(internal).version
        adapter = ServedAdapter(
            name=target.name,
            lora_request=request,
            root=target.source,
            version=version,
            base_model_name=target.base_model_name,
            created=int(time.time()),
        )
        if target.version and version != target.version:
            await self.engine.remove_lora(internal)
            raise AdapterLoadError(
                f"adapter {target.name!r}: the files at {target.source} hash to version {version[:12]}, "
                f"not {target.version[:12]}; they changed after registration",
                field="version",
            )
        return await self._pin(adapter, target.pinned)

    def _info(self, internal: str) -> AdapterInfo:
        for info in self.engine.list_loras():
            if info.name == internal:
                return info
        raise AdapterNotFoundError(f"adapter {internal!r} vanished right after loading")

    async def _pin(self, adapter: ServedAdapter, pinned: bool) -> ServedAdapter:
        """Pin the adapter in the engine's caches when asked (pins are never taken back here)."""
        if not pinned or adapter.pinned:
            return adapter
        await self.engine.pin_lora(adapter.lora_request.lora_name)
        return replace(adapter, pinned=True)

    async def _switch(self, adapter: ServedAdapter) -> None:
        previous = self._active.get(adapter.name)
        self._active[adapter.name] = adapter
        logger.info("serving adapter %s version %s", adapter.name, adapter.version[:12])
        if previous is not None and previous.lora_request.lora_name != adapter.lora_request.lora_name:
            await self._drop(previous)

    async def _drop(self, adapter: ServedAdapter) -> None:
        logger.info("dropping adapter %s version %s", adapter.name, adapter.version[:12])
        await self.engine.remove_lora(adapter.lora_request.lora_name)
