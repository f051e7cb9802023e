"""Packaging: every component installs under the `loraplane` import name, and no code imports the
bare folder names, which other distributions own (Hugging Face's `kernels` installs `kernels`)."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import tomllib

from loraplane.supervisor import SAFE_PATH

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ("control_plane", "gateway", "inference_worker", "kernels")
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _import_name(package_dir: Path) -> str:
    parts = package_dir.relative_to(ROOT).parts
    return ".".join(parts if parts[0] == "loraplane" else ("loraplane", *parts))


def test_every_package_folder_is_installed_under_loraplane():
    folders = [
        init.parent for name in ("loraplane", *COMPONENTS) for init in (ROOT / name).rglob("__init__.py")
    ]
    assert sorted(SETUPTOOLS["packages"]) == sorted(_import_name(folder) for folder in folders)


def test_component_folders_map_to_loraplane_subpackages():
    assert SETUPTOOLS["package-dir"] == {"loraplane": "loraplane"} | {f"loraplane.{n}": n for n in COMPONENTS}


def test_no_code_imports_a_bare_component_name():
    bare = re.compile(rf"^\s*(from|import) ({'|'.join(COMPONENTS)})\b", re.M)
    files = subprocess.check_output(["git", "ls-files", "*.py"], cwd=ROOT, text=True).split()
    offenders = [name for name in files if bare.search((ROOT / name).read_text())]
    assert offenders == []


@pytest.mark.parametrize("component", COMPONENTS)
def test_components_resolve_to_the_repository_folders(component):
    code = f"import loraplane.{component} as m; print(m.__file__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert Path(out.stdout.strip()) == ROOT / component / "__init__.py"


def test_hugging_face_kernels_and_ours_are_both_importable():
    """Hugging Face's `kernels` (a transformers dependency) and `loraplane.kernels` live side by side,
    even for a process started in the repository root (the supervisor's children run with `-P`)."""
    try:
        metadata.distribution("kernels")
    except metadata.PackageNotFoundError:
        pytest.skip("Hugging Face's kernels package is not installed")
    code = (
        "import kernels, loraplane.kernels, transformers.integrations.hub_kernels;"
        "print(kernels.__file__); print(loraplane.kernels.__file__)"
    )
    out = subprocess.run(
        [sys.executable, *SAFE_PATH, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    theirs, ours = (Path(line) for line in out.stdout.split())
    assert ROOT not in theirs.parents
    assert ours == ROOT / "kernels" / "__init__.py"
