"""adapter_version: sha256 of the adapter's files."""

from __future__ import annotations

import shutil

from loraplane.adapter_format import adapter_version
from tests.inference_worker.lora.conftest import edit_config


def test_version_is_stable_across_copies_and_changes_with_any_file(make_adapter, tmp_path):
    adapter = make_adapter(seed=1)
    copy = shutil.copytree(adapter, tmp_path / "copy")
    (copy / "README.md").write_text("not part of the adapter")
    assert adapter_version(adapter) == adapter_version(copy)
    assert adapter_version(make_adapter("other", seed=2)) != adapter_version(adapter)
    before = adapter_version(copy)
    edit_config(copy, lora_alpha=99)
    assert adapter_version(copy) != before


def test_version_accepts_home_relative_paths(make_adapter, monkeypatch):
    adapter = make_adapter()
    monkeypatch.setenv("HOME", str(adapter.parent))
    assert adapter_version(f"~/{adapter.name}") == adapter_version(adapter)
