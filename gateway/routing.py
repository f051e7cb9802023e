"""Choosing a worker for a request: pure functions over snapshots of the workers' state.

Semantics:
- a request for the base model (empty `model`, or a worker's base model name) goes to the least-loaded
  healthy worker of that base model (ties broken at random);
- a request for an adapter goes to the healthy worker that ranks first for the adapter's name by
  rendezvous (highest-random-weight) hashing among the workers holding the adapter, so each adapter
  keeps to one worker and its GPU slot and prefix cache stay warm; when that worker carries more than
  `slack` requests above the least-loaded candidate, the least-loaded candidate takes it instead;
- a model no worker knows is `UNKNOWN`; no healthy worker for a known model is `NONE_HEALTHY`.
"""

from __future__ import annotations

import enum
import hashlib
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerView:
    """What routing needs to know about one worker."""

    worker_id: str
    base_model: str
    adapters: frozenset[str]
    load: int
    healthy: bool = True


class Miss(enum.Enum):
    UNKNOWN = "unknown"
    NONE_HEALTHY = "none_healthy"


def rendezvous_score(key: str, worker_id: str) -> int:
    """A stable pseudo-random weight of (key, worker); the same on every gateway and every run."""
    digest = hashlib.blake2b(f"{key}\0{worker_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_order(key: str, worker_ids: Collection[str]) -> list[str]:
    """Worker ids ordered by preference for `key` (first = owner)."""
    return sorted(worker_ids, key=lambda w: rendezvous_score(key, w), reverse=True)


def candidates(workers: Sequence[WorkerView], model: str) -> tuple[list[WorkerView], bool]:
    """(the workers that serve `model`, whether it is an adapter); empty list when none serves it."""
    if not model:
        return list(workers), False
    base = [w for w in workers if w.base_model == model]
    if base:
        return base, False
    return [w for w in workers if model in w.adapters], True


def choose(
    workers: Sequence[WorkerView], model: str, *, slack: int = 8, exclude: Collection[str] = ()
) -> WorkerView | Miss:
    """The worker for a request naming `model` (see the module docstring), or why there is none."""
    serving, is_adapter = candidates(workers, model)
    if not serving:
        return Miss.UNKNOWN
    healthy = [w for w in serving if w.healthy and w.worker_id not in exclude]
    if not healthy:
        return Miss.NONE_HEALTHY
    least = min(w.load for w in healthy)
    if is_adapter:
        owner_id = rendezvous_order(model, [w.worker_id for w in healthy])[0]
        owner = next(w for w in healthy if w.worker_id == owner_id)
        if owner.load <= least + slack:
            return owner
    return random.choice([w for w in healthy if w.load == least])
