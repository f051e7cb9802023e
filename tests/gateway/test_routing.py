"""Worker choice: rendezvous affinity for adapters, least-loaded for the base model, misses."""

from __future__ import annotations

import pytest

from loraplane.gateway.routing import Miss, WorkerView, choose, rendezvous_order


def worker(worker_id, load=0, adapters=("a", "b"), healthy=True, base="base"):
    return WorkerView(worker_id, base, frozenset(adapters), load, healthy)


def test_rendezvous_is_stable_and_spreads():
    ids = ["w0", "w1", "w2"]
    owners = {f"adapter-{i}": rendezvous_order(f"adapter-{i}", ids)[0] for i in range(30)}
    assert owners == {k: rendezvous_order(k, list(reversed(ids)))[0] for k in owners}
    assert set(owners.values()) == set(ids)


def test_removing_a_worker_moves_only_its_adapters():
    ids = ["w0", "w1", "w2"]
    before = {f"x{i}": rendezvous_order(f"x{i}", ids)[0] for i in range(40)}
    after = {k: rendezvous_order(k, ["w0", "w2"])[0] for k in before}
    assert all(after[k] == v for k, v in before.items() if v != "w1")


@pytest.mark.parametrize(
    ("workers", "model", "expected"),
    [
        ([worker("w0", load=5), worker("w1", load=1)], "base", "w1"),
        ([worker("w0", load=5), worker("w1", load=1)], "", "w1"),
        ([worker("w0", adapters=()), worker("w1", adapters=("a",), load=9)], "a", "w1"),
        ([worker("w0", healthy=False), worker("w1", load=50)], "base", "w1"),
        ([worker("w0"), worker("w1")], "zzz", Miss.UNKNOWN),
        ([worker("w0", healthy=False)], "a", Miss.NONE_HEALTHY),
        ([], "base", Miss.UNKNOWN),
    ],
)
def test_choose_table(workers, model, expected):
    choice = choose(workers, model)
    assert (choice.worker_id if isinstance(choice, WorkerView) else choice) == expected


def test_adapter_sticks_to_owner_until_overloaded():
    owner = rendezvous_order("a", ["w0", "w1"])[0]
    other = "w1" if owner == "w0" else "w0"
    calm = [worker(owner, load=3), worker(other, load=0)]
    assert choose(calm, "a", slack=4).worker_id == owner
    busy = [worker(owner, load=9), worker(other, load=0)]
    assert choose(busy, "a", slack=4).worker_id == other


def test_exclude_skips_failed_worker():
    owner = rendezvous_order("a", ["w0", "w1"])[0]
    choice = choose([worker("w0"), worker("w1")], "a", exclude={owner})
    assert choice.worker_id != owner
