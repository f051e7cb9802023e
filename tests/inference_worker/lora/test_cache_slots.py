"""The CPU LRU (pinning, eviction order) and the GPU slot table."""

from __future__ import annotations

import pytest

from loraplane.inference_worker.lora.cache import AdapterCache
from loraplane.inference_worker.lora.slots import SlotTable
from loraplane.inference_worker.lora.weights import AdapterWeights


def _weights(version: str) -> AdapterWeights:
    return AdapterWeights(version=version, rank=1, modules={})


def test_lru_evicts_least_recently_used():
    cache = AdapterCache(3)
    for version in "abc":
        cache.put(_weights(version))
    cache.get("a")
    assert cache.put(_weights("d")) == ["b"]
    assert cache.versions() == ["c", "a", "d"]


def test_pinned_versions_are_never_evicted():
    cache = AdapterCache(3)
    cache.put(_weights("p"))
    assert cache.pin("p")
    for version in "abcdefgh":
        cache.put(_weights(version))
        assert "p" in cache and len(cache) <= 3


@pytest.mark.parametrize("capacity, pins_allowed", [(1, 0), (2, 1), (3, 2), (5, 4)])
def test_pinning_always_leaves_room_for_one_more(capacity, pins_allowed):
    cache = AdapterCache(capacity)
    results = [cache.pin(str(i)) for i in range(capacity + 1)]
    assert results == [True] * pins_allowed + [False] * (capacity + 1 - pins_allowed)


# (resident before, versions requested, expected slots of the requested, expected loads)
SLOT_CASES = [
    ([], {"a"}, {"a": 0}, [(0, "a")]),
    (["a"], {"a", "b"}, {"a": 0, "b": 1}, [(1, "b")]),
    (["a", "b"], {"c"}, {"c": 0}, [(0, "c")]),  # a is least recently used
    (["a", "b"], {"b", "c"}, {"b": 1, "c": 0}, [(0, "c")]),
    (["a", "b"], {"a", "b"}, {"a": 0, "b": 1}, []),
]


@pytest.mark.parametrize("resident, requested, expected, loads", SLOT_CASES)
def test_slot_assignment(resident, requested, expected, loads):
    table = SlotTable(2)
    for version in resident:
        table.assign({version})
    slot_of, to_load = table.assign(requested)
    assert slot_of == expected and to_load == loads


def test_slot_assignment_refuses_more_than_max_loras():
    with pytest.raises(ValueError, match="max_loras=2"):
        SlotTable(2).assign({"a", "b", "c"})


def test_released_slot_is_reused_first():
    table = SlotTable(3)
    table.assign({"a", "b", "c"})
    assert table.release("b") == 1
    assert table.assign({"d"}) == ({"d": 1}, [(1, "d")])
