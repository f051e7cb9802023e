"""Adapter sources: local paths, `~`, hub ids from the local Hugging Face cache (no network)."""

from __future__ import annotations

import shutil

import pytest

from loraplane.adapter_format import AdapterSourceNotFoundError, is_hub_id, resolve_adapter_path


def _fake_hub_cache(cache, repo_id, adapter):
    """Lay out `adapter` as huggingface_hub's cache holds a downloaded snapshot of `repo_id`."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    shutil.copytree(adapter, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


def test_local_and_home_paths(make_adapter, monkeypatch):
    adapter = make_adapter()
    assert resolve_adapter_path(str(adapter)) == adapter.resolve()
    monkeypatch.setenv("HOME", str(adapter.parent))
    assert resolve_adapter_path(f"~/{adapter.name}") == adapter.resolve()


def test_hub_id_found_in_cache_while_offline(make_adapter, tmp_path):
    snapshot = _fake_hub_cache(tmp_path / "hub", "acme/sql-lora", make_adapter())
    resolved = resolve_adapter_path("acme/sql-lora", offline=True, cache_dir=tmp_path / "hub")
    assert resolved == snapshot


@pytest.mark.parametrize(
    "kwargs, hint", [({"offline": True}, "HF_HUB_OFFLINE"), ({"allow_download": False}, "not allowed")]
)
def test_hub_id_not_cached_says_what_to_do(tmp_path, kwargs, hint):
    with pytest.raises(AdapterSourceNotFoundError) as info:
        resolve_adapter_path("acme/missing", cache_dir=tmp_path, **kwargs)
    assert hint in str(info.value) and "hf download acme/missing" in str(info.value)
    assert info.value.field == "source"


@pytest.mark.parametrize("source", ["/no/such/dir", "./relative/missing", "~/missing-adapter", "a/b/c"])
def test_missing_paths_are_not_mistaken_for_hub_ids(source):
    with pytest.raises(AdapterSourceNotFoundError, match="does not exist"):
        resolve_adapter_path(source, offline=True)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("acme/sql-lora", True),
        ("Org_1/model.v2", True),
        ("a" * 96 + "/b", True),
        ("a" * 97 + "/b", False),
        ("acme/" + "b" * 97, False),
        ("acme", False),
        ("a/b/c", False),
        ("-acme/x", False),
        ("./acme/x", False),
        ("acme/x\n", False),
        ("acme/x y", False),
    ],
)
def test_hub_id_shape(source, expected):
    assert is_hub_id(source) is expected
