"""An adapter's files: the version (sha256 of the files), the weights-file check, links out of the folder."""

from __future__ import annotations

import os
import re
import shutil

import pytest
import torch

from loraplane.adapter_format import AdapterLoadError, adapter_version, load_peft_config, validate_adapter_dir
from loraplane.adapter_format.files import CONFIG_FILE
from tests.inference_worker.lora.conftest import edit_config
from tests.loraplane.adapter_format.bad_files import MALFORMED_HEADERS, WEIGHTS, link_outside


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


@pytest.mark.parametrize("data", MALFORMED_HEADERS.values(), ids=MALFORMED_HEADERS.keys())
def test_malformed_safetensors_headers_are_adapter_load_errors(make_adapter, data):
    adapter = make_adapter()
    (adapter / WEIGHTS).write_bytes(data)
    with pytest.raises(AdapterLoadError, match="not a valid safetensors file") as caught:
        validate_adapter_dir(adapter)
    assert caught.value.field == "weights"


@pytest.mark.parametrize("name, field", [(CONFIG_FILE, "adapter_config"), (WEIGHTS, "weights")])
def test_files_linked_from_outside_the_directory_are_not_read(make_adapter, tmp_path, name, field):
    adapter = make_adapter()
    target = link_outside(adapter, name, tmp_path / "elsewhere")
    for check in (validate_adapter_dir, adapter_version, load_peft_config):
        if check is load_peft_config and name == WEIGHTS:
            continue
        with pytest.raises(AdapterLoadError, match=f"{name} is a link to a file outside") as caught:
            check(adapter)
        assert caught.value.field == field and str(target.parent) not in str(caught.value)


def test_links_inside_the_directory_and_the_hub_cache_layout_are_followed(make_adapter, tmp_path):
    adapter = make_adapter()
    plain = validate_adapter_dir(adapter)[1]
    (adapter / "real").mkdir()
    (adapter / WEIGHTS).replace(adapter / "real" / WEIGHTS)
    os.symlink(adapter / "real" / WEIGHTS, adapter / WEIGHTS)
    assert validate_adapter_dir(adapter)[1] == plain
    repo = tmp_path / "hub" / "models--org--lora"  # huggingface_hub's cache: snapshot files link to blobs
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for index, name in enumerate((CONFIG_FILE, WEIGHTS)):
        shutil.copy(adapter / name, repo / "blobs" / f"blob{index}")
        os.symlink(f"../../blobs/blob{index}", snapshot / name)
    assert validate_adapter_dir(snapshot)[1] == plain


def test_integer_weights_are_refused_from_the_header(make_adapter):
    from safetensors.torch import load_file, save_file

    adapter = make_adapter()
    tensors = load_file(adapter / WEIGHTS)
    key = sorted(tensors)[0]
    tensors[key] = tensors[key].to(torch.int32)
    save_file(tensors, adapter / WEIGHTS)
    with pytest.raises(AdapterLoadError, match=f"tensor '{re.escape(key)}' has dtype I32"):
        validate_adapter_dir(adapter)
