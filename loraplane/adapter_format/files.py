"""An adapter directory's files: which ones hold the weights, a cheap integrity check, the version.

Torch-free on purpose: the control plane imports this to validate and version adapters without
loading a model (safetensors reads the header with its numpy framework, which needs no torch).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from safetensors import SafetensorError, safe_open

from loraplane.adapter_format.errors import AdapterLoadError, AdapterSourceNotFoundError

CONFIG_FILE = "adapter_config.json"
# PEFT's save order: safetensors first, the pickled .bin only for old adapters (vLLM searches the same way).
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
_HASH_CHUNK = 1 << 20


def find_weights_file(adapter_dir: Path) -> Path:
    """The adapter's weight file; AdapterLoadError(field="weights") when there is none."""
    for name in WEIGHT_FILES:
        path = adapter_dir / name
        if path.is_file():
            return path
    raise AdapterLoadError(
        f"{adapter_dir} has no adapter weights: expected one of {', '.join(WEIGHT_FILES)} "
        "(save the adapter with PeftModel.save_pretrained)",
        field="weights",
    )


def adapter_files(adapter_dir: Path) -> list[Path]:
    """The files that define an adapter: its config and its weight file, in a fixed order."""
    config = adapter_dir / CONFIG_FILE
    if not adapter_dir.is_dir():
        raise AdapterSourceNotFoundError(f"adapter directory {adapter_dir} does not exist", field="source")
    if not config.is_file():
        raise AdapterSourceNotFoundError(
            f"{adapter_dir} holds no {CONFIG_FILE}; point at a directory that "
            "PeftModel.save_pretrained wrote",
            field="source",
        )
    return [config, find_weights_file(adapter_dir)]


def adapter_version(path: str | Path) -> str:
    """sha256 (hex) of the adapter's files (config + weights), each prefixed by its name.

    Semantics: two directories with byte-identical adapter files share a version; any change to the
    config or the weights gives a new version, so caches keyed by it never serve stale weights.
    """
    digest = hashlib.sha256()
    for file in adapter_files(Path(path).expanduser()):
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def check_weights_file(path: Path) -> None:
    """Cheap integrity check (no tensor is read): a safetensors header that safetensors itself accepts
    (valid JSON, offsets that exactly cover the file), or a non-empty .bin.
    Raises AdapterLoadError(field="weights")."""
    if path.suffix == ".bin":
        if path.stat().st_size == 0:
            raise AdapterLoadError(f"{path} is empty", field="weights")
        return
    try:
        with safe_open(path, framework="numpy"):
            pass
    except (SafetensorError, OSError) as exc:
        raise AdapterLoadError(f"{path} is not a valid safetensors file: {exc}", field="weights") from exc
