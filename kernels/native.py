"""Build loraplane's C++ CPU extensions (`kernels/csrc/*.cpp`) once per environment, then load them.

`load_extension` compiles a source with torch's `cpp_extension` (ninja, g++, AVX-512 flags) into
`<cache root>/kernels/<name>-<key>/` (`loraplane.cache.cache_root`, `$LORAPLANE_CACHE`), where the key
hashes everything the binary depends on: the source bytes, the compiler flags, the torch version and
its C++ ABI, the Python ABI tag and the machine. A `built` stamp is written once the library imported.
Every later process (a fresh shell, a restart, another venv with the same torch and Python) finds the
stamp and imports `<name>.so` directly: no ninja, no compiler, tens of milliseconds instead of a
~20-60 s build. Edited sources or another torch get a new key, hence a new build.

Concurrent first builds (two workers starting at once) serialize on an `fcntl` lock beside the build
directory; the OS releases it if the builder dies, and whoever waited then finds the stamp and loads
what the first one built (or builds it itself if that one failed). Without AVX-512 or a working
compiler `load_extension` returns None and logs once what serves instead (the PyTorch references,
oneDNN).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import logging
import platform
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from loraplane.cache import cache_root

logger = logging.getLogger(__name__)

CSRC = Path(__file__).resolve().parent / "csrc"
BASE_CFLAGS = ("-O3", "-mavx512f", "-mfma")
BUILT_STAMP = "built"


@functools.cache
def avx512_supported() -> bool:
    """Whether this CPU runs AVX-512F code (what torch's own kernel dispatch detected)."""
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


@dataclass(frozen=True)
class Extension:
    """One C++ extension: `csrc/<source>` compiled with `BASE_CFLAGS` plus `flags` into module `name`."""

    name: str
    source: str
    flags: tuple[str, ...] = ()
    ldflags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"extension name {self.name!r} must be a Python identifier (its module name)")

    @property
    def sources(self) -> list[Path]:
        return [CSRC / self.source]

    @property
    def cflags(self) -> list[str]:
        return [*BASE_CFLAGS, *self.flags]

    def directory(self) -> Path:
        """Where it is built and found: `<cache root>/kernels/<name>-<build key>`."""
        key = build_key(self.name, self.sources, self.cflags, self.ldflags)
        return cache_root() / "kernels" / f"{self.name}-{key}"


def build_key(name: str, sources: Sequence[Path], cflags: Sequence[str], ldflags: Sequence[str]) -> str:
    """A digest of everything the built library depends on (a new key means a new build)."""
    digest = hashlib.sha256()
    abi = str(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", ""))
    for part in (name, torch.__version__, abi, sys.implementation.cache_tag, platform.machine()):
        digest.update(part.encode() + b"\0")
    for flag in (*cflags, "|", *ldflags):
        digest.update(flag.encode() + b"\0")
    for source in sources:
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def load_extension(extension: Extension, fallback: str) -> ModuleType | None:
    """The compiled `extension` (built here at most once per environment), or None without AVX-512 or
    a working compiler, logging that `fallback` serves instead."""
    if not avx512_supported():
        logger.warning("CPU lacks AVX-512: %s", fallback)
        return None
    try:
        directory = extension.directory()
        return load_prebuilt(extension.name, directory) or _build_locked(extension, directory)
    except Exception as exc:  # a missing or failing compiler: keep serving without it
        logger.warning("building %s failed (%s): %s", extension.name, exc, fallback)
        return None


def load_prebuilt(name: str, directory: Path) -> ModuleType | None:
    """Import `<directory>/<name>.so` if a finished build left it there, else None (no build)."""
    library = directory / f"{name}.so"
    if not (directory / BUILT_STAMP).exists() or not library.exists():
        return None
    spec = importlib.util.spec_from_file_location(name, library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build_locked(extension: Extension, directory: Path) -> ModuleType:
    """Build under an exclusive lock: one process compiles, the others wait and load its result."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f"{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes or the process dies
        module = load_prebuilt(extension.name, directory)
        if module is not None:
            return module
        # Under our lock nobody else builds here: a baton left by torch in a killed build is stale.
        (directory / "lock").unlink(missing_ok=True)
        return _build(extension, directory)


def _build(extension: Extension, directory: Path) -> ModuleType:
    from torch.utils.cpp_extension import load

    logger.info("building the CPU extension %s in %s (once per environment)", extension.name, directory)
    start = time.monotonic()
    with _elapsed_bar(f"building {extension.name}"):
        module = load(
            name=extension.name,
            sources=[str(s) for s in extension.sources],
            extra_cflags=extension.cflags,
            extra_ldflags=list(extension.ldflags),
            build_directory=str(directory),
        )
    (directory / BUILT_STAMP).touch()
    logger.info("built %s in %.1f s", extension.name, time.monotonic() - start)
    return module


@contextlib.contextmanager
def _elapsed_bar(description: str):
    """A progress bar showing the seconds spent while a step of unknown length runs (a compiler)."""
    from tqdm import tqdm

    done = threading.Event()
    with tqdm(desc=description, bar_format="{desc}: {elapsed}", disable=None) as bar:

        def tick() -> None:
            while not done.wait(1.0):
                bar.refresh()

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()
