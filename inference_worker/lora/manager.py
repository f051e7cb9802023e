"""`LoRAManager`: adapters by name and version, a CPU LRU behind GPU slots, a background loader.

The engine loop calls the synchronous `is_ready` / `activate`; `add` loads on a loader thread so disk
I/O never blocks a step. One lock guards the bookkeeping; weight copies into slots happen in the
engine thread inside `activate`, through `SlotWeights` (`loraplane.inference_worker.lora.slot_weights`),
which owns the wrapped projections and the kernels' metadata.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from loraplane.adapter_format import (
    AdapterLoadError,
    PeftLoRAConfig,
    adapter_version,
    load_peft_config,
    resolve_adapter_path,
)
from loraplane.inference_worker.errors import AdapterAlreadyLoadedError, AdapterNotFoundError
from loraplane.inference_worker.lora.cache import AdapterCache
from loraplane.inference_worker.lora.config import LoRAConfig
from loraplane.inference_worker.lora.request import LoRARequest
from loraplane.inference_worker.lora.slot_weights import SlotWeights
from loraplane.inference_worker.lora.slots import SlotTable
from loraplane.inference_worker.lora.weights import AdapterWeights

logger = logging.getLogger(__name__)
_LOADER_THREADS = 4


@dataclass(frozen=True)
class AdapterInfo:
    """A registered adapter as callers see it. `tier` is "device" (in an adapter slot on the engine's
    device, a GPU or a CPU worker's memory), "host" (the host-memory cache), "loading" or "disk"."""

    name: str
    int_id: int
    path: str
    version: str
    base_model_name: str | None
    rank: int
    tier: str
    pinned: bool


@dataclass
class _Record:
    request: LoRARequest
    directory: Path
    version: str
    config: PeftLoRAConfig
    rank: int


class LoRAManager:
    """Owns the LoRA-wrapped projections of `model`, their GPU slots, and the adapter caches.

    Semantics: `add` registers a name -> version (sha256 of the files) and loads its weights into the
    CPU LRU (`max_cpu_loras`); `activate(versions)` gives each version one of `max_loras` GPU slots,
    evicting the least recently used slots outside `versions`; `meta` and `slot_rank` feed the kernels.
    A removed name's version keeps its cached weights until evicted, so in-flight requests finish.
    """

    def __init__(
        self,
        config: LoRAConfig,
        model: nn.Module,
        device: torch.device | str,
        dtype: torch.dtype,
        max_num_tokens: int = 8192,
        allow_download: bool = True,
    ) -> None:
        self.config = config
        self.allow_download = allow_download
        self._slot_weights = SlotWeights(config, model, device, dtype, max_num_tokens)
        # The device side's state, shared for the engine and the kernels (`meta`, `slot_rank`).
        self.device, self.dtype = self._slot_weights.device, self._slot_weights.dtype
        self.layers, self.shapes = self._slot_weights.layers, self._slot_weights.shapes
        self.meta, self.slot_rank = self._slot_weights.meta, self._slot_weights.slot_rank
        self._lock = threading.RLock()
        self._by_name: dict[str, _Record] = {}
        self._by_version: dict[str, _Record] = {}
        self._pending: dict[str, tuple[Future, object]] = {}  # name -> (future, token of that add)
        self._reloading: dict[str, Future] = {}
        self._cache = AdapterCache(config.max_cpu_loras)
        self._slots = SlotTable(config.max_loras)
        # Hashing, reading and pinning release the GIL: a few loader threads load many adapters faster.
        self._loader = ThreadPoolExecutor(max_workers=_LOADER_THREADS, thread_name_prefix="lora-loader")

    # ---- registration (any thread) ----------------------------------------------------------------
    def add(self, request: LoRARequest) -> Future[AdapterInfo]:
        """Validate and load `request` in the background; errors come through the future."""
        with self._lock:
            pending = self._pending.get(request.lora_name)
            if pending is not None:
                return pending[0]
            token = object()
            future = self._loader.submit(self._add, request, token)
            self._pending[request.lora_name] = (future, token)
            future.add_done_callback(lambda f, name=request.lora_name: self._drop_pending(name, f))
            return future

    def remove(self, name: str) -> bool:
        with self._lock:
            record = self._by_name.pop(name, None)
            if record is None:
                return self._pending.pop(name, None) is not None
            self._cache.unpin(record.version)
            logger.info("removed adapter %s (version %s)", name, record.version[:12])
            return True

    def pin(self, name: str) -> bool:
        with self._lock:
            record = self._record(name)
            if not self._cache.pin(record.version):
                return False
            self._schedule_reload(record.version)
            return True

    def list(self) -> list[AdapterInfo]:
        with self._lock:
            infos = [self._info(record) for record in self._by_name.values()]
            loading = [name for name in self._pending if name not in self._by_name]
        placeholders = [AdapterInfo(name, 0, "", "", None, 0, "loading", False) for name in loading]
        return infos + placeholders

    def lookup(self, name: str) -> AdapterInfo:
        with self._lock:
            return self._info(self._record(name))

    def version_of(self, request: LoRARequest) -> str:
        """The version a request runs with. Like vLLM, a request naming an adapter that is not added yet
        loads it first (blocking the caller, never the step loop); async callers should add it first."""
        with self._lock:
            record = self._by_name.get(request.lora_name)
        if record is None:
            return self.add(request).result().version
        return record.version

    def close(self) -> None:
        self._loader.shutdown(wait=False, cancel_futures=True)

    # ---- engine loop (synchronous, no disk I/O) ---------------------------------------------------
    def is_ready(self, version: str) -> bool:
        """True when `version` can get a slot without disk I/O; otherwise starts a background reload."""
        with self._lock:
            if version in self._cache or self._slots.slot_of(version) is not None:
                return True
            self._schedule_reload(version)
            return False

    def activate(self, versions: set[str]) -> dict[str, int]:
        """Give every version a GPU slot (copying weights in as needed); returns version -> slot."""
        with self._lock:
            slot_of, to_load = self._slots.assign(set(versions))
            for version in versions:
                self._cache.get(version)  # refresh CPU recency of what is in use
            for slot, version in to_load:
                self._slot_weights.fill(slot, self._weights_for_slot(version))
        return slot_of

    # ---- internals -----------------------------------------------------------------------------------
    def _add(self, request: LoRARequest, token: object) -> AdapterInfo:
        started = time.monotonic()
        directory = resolve_adapter_path(request.lora_path, allow_download=self.allow_download)
        config = load_peft_config(directory, self.config.max_lora_rank, self.shapes.num_layers)
        self._check_enabled_modules(config)
        version = adapter_version(directory)
        with self._lock:
            existing = self._by_name.get(request.lora_name)
            if existing is not None:
                return self._same_or_conflict(existing, request, version)
            cached = version in self._cache
        weights = None if cached else self._load(directory, config, version)
        record = _Record(request, directory, version, config, weights.rank if weights else 0)
        with self._lock:
            if self._pending.get(request.lora_name, (None, None))[1] is not token:
                raise AdapterNotFoundError(f"adapter {request.lora_name!r} was removed while it was loading")
            if weights is not None:
                self._cache.put(weights)
            else:
                record.rank = self._by_version[version].rank
            self._by_name[request.lora_name] = record
            self._by_version[version] = record
            logger.info(
                "loaded adapter %s (version %s, rank %d) in %.2f s",
                request.lora_name,
                version[:12],
                record.rank,
                time.monotonic() - started,
            )
            return self._info(record)

    def _check_enabled_modules(self, config: PeftLoRAConfig) -> None:
        """Reject an adapter that targets a projection this engine was started without LoRA on."""
        enabled = self.config.enabled_modules
        for name in config.targeted_modules(self.shapes.num_layers):
            if name not in enabled:
                raise AdapterLoadError(
                    f"the adapter targets {name}, but this engine serves LoRA only on "
                    f"{', '.join(enabled)} (lora_target_modules); restart it with {name} included",
                    field="target_modules",
                )

    def _same_or_conflict(self, existing: _Record, request: LoRARequest, version: str) -> AdapterInfo:
        if existing.version != version:
            raise AdapterAlreadyLoadedError(
                f"adapter {request.lora_name!r} is already loaded with other weights "
                f"(version {existing.version[:12]}, new {version[:12]}); remove it first or use a new name"
            )
        return self._info(existing)

    def _load(self, directory: Path, config: PeftLoRAConfig, version: str) -> AdapterWeights:
        return self._slot_weights.load(directory, config, version)

    def _reload(self, version: str) -> None:
        record = self._by_version[version]
        if adapter_version(record.directory) != version:
            raise AdapterLoadError(
                f"the files of adapter {record.request.lora_name!r} in {record.directory} changed since it "
                "was registered; remove and re-add it to serve the new weights",
                field="weights",
            )
        weights = self._load(record.directory, record.config, version)
        with self._lock:
            self._cache.put(weights)

    def _schedule_reload(self, version: str) -> None:
        if version in self._cache or version in self._reloading or version not in self._by_version:
            return
        future = self._loader.submit(self._reload, version)
        self._reloading[version] = future
        future.add_done_callback(lambda f, v=version: self._reload_done(v, f))

    def _reload_done(self, version: str, future: Future) -> None:
        with self._lock:
            self._reloading.pop(version, None)
        if future.exception() is not None:
            logger.error("reloading adapter version %s failed: %s", version[:12], future.exception())

    def _drop_pending(self, name: str, future: Future) -> None:
        with self._lock:
            if self._pending.get(name, (None,))[0] is future:
                del self._pending[name]

    def _weights_for_slot(self, version: str) -> AdapterWeights:
        weights = self._cache.get(version)
        if weights is not None:
            return weights
        # Only reachable if the CPU copy was evicted between is_ready and activate: load in line.
        record = self._by_version.get(version)
        if record is None:
            raise AdapterNotFoundError(f"adapter version {version[:12]} is not loaded")
        logger.warning("adapter %s was evicted before activation; loading it synchronously", version[:12])
        weights = self._load(record.directory, record.config, version)
        self._cache.put(weights)
        return weights

    def _record(self, name: str) -> _Record:
        record = self._by_name.get(name)
        if record is None:
            raise AdapterNotFoundError(f"adapter {name!r} is not loaded; add it first (LLM.add_lora)")
        return record

    def _info(self, record: _Record) -> AdapterInfo:
        version = record.version
        if self._slots.slot_of(version) is not None:
            tier = "device"
        elif version in self._cache:
            tier = "host"
        else:
            tier = "loading" if version in self._reloading else "disk"
        request = record.request
        return AdapterInfo(
            name=request.lora_name,
            int_id=request.lora_int_id,
            path=str(record.directory),
            version=version,
            base_model_name=request.base_model_name,
            rank=record.rank,
            tier=tier,
            pinned=self._cache.is_pinned(version),
        )
