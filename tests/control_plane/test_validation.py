"""Names, sources under the adapter roots, and adapter folders (through `loraplane.adapter_format`)."""

from __future__ import annotations

import os

import pytest
from adapter_files import write_adapter

from loraplane.control_plane.errors import InvalidArgumentError, SourceNotFoundError
from loraplane.control_plane.validation import (
    check_adapter_dir,
    check_base_model_name,
    check_name,
    resolve_local_source,
)


@pytest.mark.parametrize("name", ["a", "sql-lora", "org.v1:2_b", "9" * 128])
def test_good_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", " ", "a b", "a/b", "a\\b", "-a", ".a", "x" * 129, "é", "a\n"])
def test_bad_names(name):
    with pytest.raises(InvalidArgumentError):
        check_name(name)


def test_base_model_names():
    assert check_base_model_name("HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(InvalidArgumentError):
        check_base_model_name("has space")


def test_sources_stay_under_roots(tmp_path):
    root = tmp_path / "root"
    inside = write_adapter(root / "lora")
    outside = write_adapter(tmp_path / "elsewhere")
    os.symlink(outside, root / "link")
    os.symlink(inside, root / "good-link")
    roots = (root.resolve(),)
    assert resolve_local_source(str(inside), roots) == inside.resolve()
    assert resolve_local_source("lora", roots) == inside.resolve()  # relative to the first root
    assert resolve_local_source(str(root / "good-link"), roots) == inside.resolve()
    for escape in (str(outside), str(root / "link"), f"{root}/../elsewhere", "../elsewhere", "/etc"):
        with pytest.raises(InvalidArgumentError, match="outside the allowed"):
            resolve_local_source(escape, roots)
    with pytest.raises(SourceNotFoundError):
        resolve_local_source(str(root / "missing"), roots)
    with pytest.raises(InvalidArgumentError, match="no adapter roots"):
        resolve_local_source(str(inside), ())


def test_adapter_dir_checks(tmp_path):
    checked = check_adapter_dir(write_adapter(tmp_path / "ok", r=4, target_modules="all-linear"), "ok")
    assert checked.rank == 4 and len(checked.version) == 64
    assert checked.target_modules == (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    with pytest.raises(InvalidArgumentError, match="lm_head"):
        check_adapter_dir(write_adapter(tmp_path / "head", target_modules=["lm_head"]), "head")
    truncated = write_adapter(tmp_path / "cut")
    weights = truncated / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(InvalidArgumentError, match="safetensors"):
        check_adapter_dir(truncated, "cut")
