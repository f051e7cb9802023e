"""Cheap checks of what a caller sends: names, sources (allowed roots, no escapes) and the PEFT config.

The adapter config is validated with the parser the workers use (`loraplane.adapter_format`, torch-free)
so the control plane and the workers agree on what is a valid adapter.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loraplane.adapter_format import AdapterLoadError, is_hub_id, validate_adapter_dir
from loraplane.adapter_format.files import adapter_files
from loraplane.control_plane.errors import InvalidArgumentError, ModelNameClashError, SourceNotFoundError
from loraplane.control_plane.records import AdapterRecord

MAX_NAME_LENGTH = 128
MAX_REQUEST_ID_LENGTH = 255
MAX_BASE_MODEL_LENGTH = 256
MAX_RANK = 1024  # beyond any adapter a worker could hold; a larger r is a broken config
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_PROBE_LAYERS = 64


@dataclass(frozen=True)
class CheckedAdapter:
    """What the control plane learned about an adapter's files."""

    version: str
    rank: int
    target_modules: tuple[str, ...]


def check_name(name: str, what: str = "adapter name") -> str:
    """The name, if it is 1-128 letters, digits, '.', '_', '-', ':' starting with a letter or digit."""
    if not name:
        raise InvalidArgumentError(f"{what} is empty; give 1-{MAX_NAME_LENGTH} characters")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgumentError(f"{what} is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}")
    if not _NAME.fullmatch(name):
        raise InvalidArgumentError(
            f"{what} {name!r} is not allowed: use letters, digits, '.', '_', '-' and ':' only "
            "(no spaces or slashes), starting with a letter or digit"
        )
    return name


def check_request_id(request_id: str) -> str:
    """Empty (no deduplication), or 1-255 printable ASCII characters without spaces (a UUID fits)."""
    if len(request_id) > MAX_REQUEST_ID_LENGTH or any(not "!" <= c <= "~" for c in request_id):
        raise InvalidArgumentError(
            f"request_id must be at most {MAX_REQUEST_ID_LENGTH} printable ASCII characters without "
            "spaces (a UUID is a good choice)"
        )
    return request_id


def check_base_model_name(name: str) -> str:
    """Empty, or up to 256 printable characters without whitespace (hub ids like org/model are fine)."""
    if len(name) > MAX_BASE_MODEL_LENGTH or any(c.isspace() or not c.isprintable() for c in name):
        raise InvalidArgumentError(
            f"base_model_name must be at most {MAX_BASE_MODEL_LENGTH} printable characters without spaces"
        )
    return name


def check_hub_id(hub_id: str, allow_hub: bool) -> str:
    if not allow_hub:
        raise InvalidArgumentError(
            f"hub source {hub_id[:200]!r} refused: this control plane only accepts local paths under its "
            "adapter roots (start it with --allow-hub-sources to accept hub ids)"
        )
    if not is_hub_id(hub_id):
        raise InvalidArgumentError(f"hub id {hub_id[:200]!r} is not of the form owner/name")
    return hub_id


def resolve_local_source(source: str, roots: Sequence[Path]) -> Path:
    """The real directory for `source`, which must lie under one of `roots` after resolving symlinks.

    Semantics: a relative source is taken relative to the first root; `..` components and symlinks are
    resolved before the check, so neither can escape a root. Outside -> InvalidArgumentError (checked
    before existence, so callers learn nothing about paths outside the roots); missing ->
    SourceNotFoundError.
    """
    if not source or "\0" in source:
        raise InvalidArgumentError("adapter source path is empty or contains a NUL byte")
    if not roots:
        raise InvalidArgumentError(
            "this control plane has no adapter roots; start it with --adapter-root DIR"
        )
    path = Path(os.path.expanduser(source))
    if not path.is_absolute():
        path = roots[0] / path
    real = Path(os.path.realpath(path))
    if not any(real == root or real.is_relative_to(root) for root in roots):
        raise InvalidArgumentError(  # the roots are not echoed: the operator knows them, a caller need not
            f"adapter source {source[:300]!r} resolves outside the allowed adapter roots; copy the adapter "
            "under a root or start the control plane with another --adapter-root"
        )
    if not real.exists():
        raise SourceNotFoundError(f"adapter source {source[:300]!r} does not exist")
    if not real.is_dir():
        raise InvalidArgumentError(f"adapter source {source[:300]!r} is not a directory")
    return real


def check_adapter_dir(directory: Path, label: str, roots: Sequence[Path] = ()) -> CheckedAdapter:
    """Validate the PEFT config and weight files; InvalidArgumentError says what to fix.

    Every file must resolve inside `directory` (`loraplane.adapter_format.files`, as on the workers) and,
    when `roots` are given, under one of them too. Messages name the source as the caller gave it
    (`label`) and the offending file, never the absolute roots.
    """
    try:
        config, version = validate_adapter_dir(directory, max_lora_rank=MAX_RANK)
        _check_files_under(directory, roots)
    except AdapterLoadError as exc:
        raise InvalidArgumentError(
            f"adapter source {label!r} is not a usable PEFT LoRA adapter: {exc}"
        ) from exc
    targets = config.targeted_modules(_PROBE_LAYERS)
    return CheckedAdapter(version=version, rank=config.max_rank, target_modules=targets)


def check_not_base_model(name: str, served: set[str]) -> None:
    """Refuse an adapter `name` equal to a served base model's name: requests for that name reach the
    base model, so such an adapter could never be used."""
    if name in served:
        raise InvalidArgumentError(
            f"adapter name {name!r} is the name of a served base model; requests for {name!r} reach the "
            "base model, so this adapter could never be used: pick another name"
        )


def check_base_model_not_adapter(worker_id: str, base_model_name: str, adapter: AdapterRecord | None) -> None:
    """Refuse a worker whose served base model has the name of the registered `adapter` (the reverse of
    `check_not_base_model`): requests for that name could mean either, so the worker does not join."""
    if adapter is not None:
        raise ModelNameClashError(
            f"worker {worker_id!r} serves base model {base_model_name!r}, which is the name of registered "
            f"adapter {adapter.name!r} (base model {adapter.base_model_name or '*'!r}); requests for that "
            "name could not tell them apart: start the worker with another --served-model-name, or delete "
            "the adapter (the worker joins when it reconnects)"
        )


def _check_files_under(directory: Path, roots: Sequence[Path]) -> None:
    for name, path in adapter_files(directory) if roots else ():
        if not any(path == root or path.is_relative_to(root) for root in roots):
            raise AdapterLoadError(f"{name} resolves outside the allowed adapter roots", field="source")
