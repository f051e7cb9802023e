"""GPU slot bookkeeping: which adapter version sits in which of the `max_loras` slots."""

from __future__ import annotations

import itertools


class SlotTable:
    """Maps versions to slot indices with LRU replacement (pure Python, no tensors).

    Semantics: `assign(versions)` keeps every already-resident version in its slot, then places each
    missing one (in sorted order) into a free slot or else the least recently used slot whose version
    is not in `versions`; it returns the full version -> slot map and the (slot, version) pairs whose
    weights must be copied in.
    """

    def __init__(self, num_slots: int) -> None:
        self.num_slots = num_slots
        self._version_of: list[str | None] = [None] * num_slots
        self._slot_by_version: dict[str, int] = {}
        self._last_used = [0] * num_slots
        self._clock = itertools.count(1)

    def slot_of(self, version: str) -> int | None:
        return self._slot_by_version.get(version)

    def assign(self, versions: set[str]) -> tuple[dict[str, int], list[tuple[int, str]]]:
        if len(versions) > self.num_slots:
            raise ValueError(f"{len(versions)} adapters in one batch exceed max_loras={self.num_slots}")
        now = next(self._clock)
        slot_of, to_load = {}, []
        for version in versions:
            slot = self.slot_of(version)
            if slot is not None:
                slot_of[version] = slot
                self._last_used[slot] = now
        for version in sorted(versions - slot_of.keys()):
            slot = self._victim(versions)
            self._place(slot, version)
            self._last_used[slot] = now
            slot_of[version] = slot
            to_load.append((slot, version))
        return slot_of, to_load

    def release(self, version: str) -> int | None:
        """Forget `version` (its slot becomes free); returns the slot it held."""
        slot = self._slot_by_version.get(version)
        if slot is not None:
            self._place(slot, None)
            self._last_used[slot] = 0
        return slot

    def _place(self, slot: int, version: str | None) -> None:
        previous = self._version_of[slot]
        if previous is not None:
            del self._slot_by_version[previous]
        self._version_of[slot] = version
        if version is not None:
            self._slot_by_version[version] = slot

    def _victim(self, keep: set[str]) -> int:
        candidates = [s for s, v in enumerate(self._version_of) if v is None or v not in keep]
        return min(candidates, key=lambda s: (self._version_of[s] is not None, self._last_used[s]))
