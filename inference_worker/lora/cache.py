"""The host-memory LRU of loaded adapters (`max_cpu_loras`), keyed by version, with pinning."""

from __future__ import annotations

import logging
from collections import OrderedDict

from loraplane.inference_worker.lora.weights import AdapterWeights

logger = logging.getLogger(__name__)


class AdapterCache:
    """LRU of `AdapterWeights` by version; pinned versions are never evicted.

    Semantics: `put` inserts as most recent and evicts least recently used unpinned entries until at
    most `capacity` remain; `get` refreshes recency. Pinning keeps at least one unpinned place so a new
    adapter can always come in (`pin` refuses the capacity-th pin). Not thread-safe: the manager holds
    its lock around every call.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[str, AdapterWeights] = OrderedDict()
        self._pinned: set[str] = set()

    def __contains__(self, version: str) -> bool:
        return version in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, version: str) -> AdapterWeights | None:
        weights = self._entries.get(version)
        if weights is not None:
            self._entries.move_to_end(version)
        return weights

    def put(self, weights: AdapterWeights) -> list[str]:
        """Insert (or refresh) `weights`; returns the versions evicted to make room."""
        self._entries[weights.version] = weights
        self._entries.move_to_end(weights.version)
        evicted = []
        for version in list(self._entries):
            if len(self._entries) <= self.capacity:
                break
            if version not in self._pinned and version != weights.version:
                del self._entries[version]
                evicted.append(version)
        if evicted:
            logger.info("evicted adapter versions %s from the CPU cache", [v[:12] for v in evicted])
        return evicted

    def pin(self, version: str) -> bool:
        if version in self._pinned:
            return True
        if len(self._pinned) + 1 >= self.capacity:
            return False
        self._pinned.add(version)
        return True

    def unpin(self, version: str) -> None:
        self._pinned.discard(version)

    def is_pinned(self, version: str) -> bool:
        return version in self._pinned

    def versions(self) -> list[str]:
        """Cached versions, least recently used first."""
        return list(self._entries)
