"""Where loraplane keeps files between runs: `$LORAPLANE_CACHE`, default `~/.cache/loraplane`.

Under it: `models/` (the demo model, GGUF checkpoints converted to safetensors) and `kernels/` (the
CPU extensions built from `kernels/csrc`, see `loraplane.kernels.native`). Torch-free and engine-free,
so every component (the kernels included, which never import the engine) reads the same root.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Root of loraplane's on-disk cache (`$LORAPLANE_CACHE` or `~/.cache/loraplane`)."""
    return Path(os.environ.get("LORAPLANE_CACHE", Path.home() / ".cache" / "loraplane")).expanduser()
