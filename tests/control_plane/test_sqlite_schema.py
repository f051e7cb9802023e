"""Schema migrations of the registry's SQLite store, from a database written by an older loraplane."""

from __future__ import annotations

import sqlite3

from loraplane.control_plane.records import ResidencyState
from loraplane.control_plane.sqlite_schema import MIGRATIONS
from loraplane.control_plane.sqlite_store import SQLiteStore


def test_residency_tiers_are_renamed_device_and_host(tmp_path):
    db = sqlite3.connect(tmp_path / "registry.sqlite3")
    db.executescript(MIGRATIONS[0])
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version (version) VALUES (1)")
    for name, state in (("a", "gpu"), ("b", "cpu"), ("c", "disk"), ("d", "failed")):
        db.execute("INSERT INTO residency VALUES ('w', ?, 'v', ?, '', 1.0)", (name, state))
    db.commit()
    db.close()
    store = SQLiteStore.in_dir(tmp_path)
    assert [(r.adapter_name, r.state) for r in store.residency_for_worker("w")] == [
        ("a", ResidencyState.DEVICE),
        ("b", ResidencyState.HOST),
        ("c", ResidencyState.DISK),
        ("d", ResidencyState.FAILED),
    ]
    assert store.schema_version == len(MIGRATIONS)
    store.close()
