"""Malformed adapter files shared by the format's, the worker's and the control plane's tests."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

WEIGHTS = "adapter_model.safetensors"


def _header(raw: bytes, length: int | None = None, tail: bytes = b"") -> bytes:
    return struct.pack("<Q", len(raw) if length is None else length) + raw + tail


# Weight files whose safetensors header is not one safetensors accepts: name -> file bytes.
MALFORMED_HEADERS = {
    "json-array": _header(b"[]"),
    "json-number": _header(b"1"),
    "json-string": _header(b'"weights"'),
    "not-json": _header(b"\x00\xffnot json"),
    "truncated": _header(b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', length=4096),
    "huge-length": _header(b"{}", length=2**63),
    "too-short": b"\x01\x02",
    "entry-not-object": _header(json.dumps({"t": [1, 2]}).encode()),
    "bad-dtype": _header(
        json.dumps({"t": {"dtype": "XX", "shape": [1], "data_offsets": [0, 4]}}).encode(), tail=b"\0" * 4
    ),
}


def link_outside(adapter_dir: Path, name: str, outside_dir: Path) -> Path:
    """Replace `adapter_dir/name` by a symlink to a copy of it in `outside_dir` (outside the adapter)."""
    outside_dir.mkdir(parents=True, exist_ok=True)
    target = outside_dir / name
    (adapter_dir / name).replace(target)
    os.symlink(target, adapter_dir / name)
    return target
