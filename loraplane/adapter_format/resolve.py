"""Turn an adapter source (local path, `~` path, or Hugging Face hub id) into a local directory.

Shared by the worker (which loads what it is told) and the control plane (which first checks the
source against its policy: adapter roots, whether hub ids are allowed).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from loraplane.adapter_format.errors import AdapterSourceNotFoundError
from loraplane.adapter_format.files import CONFIG_FILE, WEIGHT_FILES

logger = logging.getLogger(__name__)

# owner/name as the hub spells it: each part at most 96 characters, the owner starting alphanumeric.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}")
_ADAPTER_FILES = [CONFIG_FILE, *WEIGHT_FILES]


def is_hub_id(source: str) -> bool:
    """True when `source` has the shape of a Hugging Face hub id (`owner/name`)."""
    return _HUB_ID.fullmatch(source) is not None


def resolve_adapter_path(
    source: str,
    *,
    allow_download: bool = True,
    offline: bool | None = None,
    cache_dir: str | Path | None = None,
    revision: str | None = None,
) -> Path:
    """The local directory holding the adapter named by `source`.

    Semantics: an existing local directory (after `~` expansion) wins; otherwise a string shaped like a
    hub id (`owner/name`) is looked up in the local Hugging Face cache first and downloaded only when
    `allow_download` and not offline (`offline=None` follows HF_HUB_OFFLINE as huggingface_hub reads
    it). Raises AdapterSourceNotFoundError(field="source") with what to do next.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve()
    if not is_hub_id(source):
        raise AdapterSourceNotFoundError(
            f"adapter path {source!r} does not exist (and is not a hub id of the form owner/name)",
            field="source",
        )
    return _from_hub(source, allow_download, _offline(offline), cache_dir, revision)


def _offline(offline: bool | None) -> bool:
    if offline is not None:
        return offline
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _from_hub(
    repo_id: str, allow_download: bool, offline: bool, cache_dir: str | Path | None, revision: str | None
) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    kwargs = {"allow_patterns": _ADAPTER_FILES, "cache_dir": cache_dir, "revision": revision}
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, **kwargs))
    except (LocalEntryNotFoundError, FileNotFoundError):
        logger.debug("adapter %s is not in the local Hugging Face cache", repo_id)
    if offline or not allow_download:
        why = "HF_HUB_OFFLINE is set" if offline else "downloading adapters from the hub is not allowed here"
        raise AdapterSourceNotFoundError(
            f"adapter {repo_id!r} is not in the local Hugging Face cache and {why}; download it first "
            f"(`hf download {repo_id}`) or pass a local directory",
            field="source",
        )
    try:
        return Path(snapshot_download(repo_id, **kwargs))
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise AdapterSourceNotFoundError(
            f"cannot fetch adapter {repo_id!r} from the Hugging Face hub: {exc}; check the id, your network "
            "and HF_TOKEN for private repos, or pass a local directory",
            field="source",
        ) from exc
