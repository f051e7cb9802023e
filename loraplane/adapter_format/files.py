"""An adapter directory's files: which ones hold the weights, a cheap integrity check, the version.

Torch-free on purpose: the control plane imports this to validate and version adapters without
loading a model (safetensors reads the header with its numpy framework, which needs no torch).

Adapter files are untrusted: every file is resolved (symlinks followed) and must lie inside the adapter
directory (`contained_file`), so a symlinked `adapter_config.json` or weights file cannot make the
control plane or a worker read a file outside it. Readers open the resolved path.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from safetensors import SafetensorError, safe_open

from loraplane.adapter_format.errors import AdapterLoadError, AdapterSourceNotFoundError

CONFIG_FILE = "adapter_config.json"
# PEFT's save order: safetensors first, the pickled .bin only for old adapters (vLLM searches the same way).
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
_HASH_CHUNK = 1 << 20


def adapter_files(adapter_dir: Path) -> list[tuple[str, Path]]:
    """The files that define an adapter, in a fixed order: (name in the directory, resolved path) of its
    config and of its weight file, each inside the directory (`contained_file`)."""
    config = adapter_dir / CONFIG_FILE
    if not adapter_dir.is_dir():
        raise AdapterSourceNotFoundError(f"adapter directory {adapter_dir} does not exist", field="source")
    if not config.is_file():
        raise AdapterSourceNotFoundError(
            f"{adapter_dir} holds no {CONFIG_FILE}; point at a directory that "
            "PeftModel.save_pretrained wrote",
            field="source",
        )
    weights = _weights_name(adapter_dir)
    return [
        (CONFIG_FILE, contained_file(adapter_dir, CONFIG_FILE, "adapter_config")),
        (weights, contained_file(adapter_dir, weights, "weights")),
    ]


def contained_file(adapter_dir: Path, name: str, field: str) -> Path:
    """The real path of `adapter_dir/name`, which must lie inside the real `adapter_dir` (or, for a
    Hugging Face cache snapshot, in its repository's `blobs`, where the hub's own symlinks point).

    Raises AdapterLoadError(field) naming the file only: where the link points is not echoed.
    """
    real = Path(os.path.realpath(adapter_dir / name))
    if not any(real.is_relative_to(root) for root in _file_roots(adapter_dir)):
        raise AdapterLoadError(
            f"{name} is a link to a file outside the adapter directory, which is not read; copy the file "
            "into the adapter directory",
            field=field,
        )
    return real


def _file_roots(adapter_dir: Path) -> list[Path]:
    directory = Path(os.path.realpath(adapter_dir))
    roots = [directory]
    repo = directory.parent.parent  # <cache>/models--owner--name/snapshots/<commit>
    if directory.parent.name == "snapshots" and repo.name.startswith("models--"):
        roots.append(Path(os.path.realpath(repo / "blobs")))
    return roots


def _weights_name(adapter_dir: Path) -> str:
    for name in WEIGHT_FILES:
        if (adapter_dir / name).is_file():
            return name
    raise AdapterLoadError(
        f"{adapter_dir} has no adapter weights: expected one of {', '.join(WEIGHT_FILES)} "
        "(save the adapter with PeftModel.save_pretrained)",
        field="weights",
    )


def adapter_version(path: str | Path) -> str:
    """sha256 (hex) of the adapter's files (config + weights), each prefixed by its name.

    Semantics: two directories with byte-identical adapter files share a version; any change to the
    config or the weights gives a new version, so caches keyed by it never serve stale weights.
    """
    digest = hashlib.sha256()
    for name, file in adapter_files(Path(path).expanduser()):
        digest.update(name.encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def is_safetensors(name: str) -> bool:
    """Whether the weight file called `name` in the adapter directory is safetensors (else a pickle)."""
    return name.endswith(".safetensors")


def check_weights_file(name: str, path: Path) -> None:
    """Cheap integrity check of the weight file `name` (resolved to `path`), no tensor read: a
    safetensors header that safetensors itself accepts (a JSON object of tensor entries whose offsets
    exactly cover the file; truncated, oversized or non-object headers are refused) whose tensors all
    have a floating dtype, or a non-empty .bin. Values (NaN, Inf) are checked where they are read.
    Raises AdapterLoadError(field="weights")."""
    if not is_safetensors(name):
        if path.stat().st_size == 0:
            raise AdapterLoadError(f"{name} is empty", field="weights")
        return
    try:
        with safe_open(path, framework="numpy") as weights:
            dtypes = {key: weights.get_slice(key).get_dtype() for key in weights.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError) as exc:
        raise AdapterLoadError(f"{name} is not a valid safetensors file: {exc}", field="weights") from exc
    for key, dtype in dtypes.items():
        if not dtype.startswith(("F", "BF")):  # F16, F32, F64, BF16, F8_*: LoRA factors are floating point
            raise AdapterLoadError(
                f"tensor {key!r} has dtype {dtype}; LoRA factors must be floating point", field="weights"
            )
