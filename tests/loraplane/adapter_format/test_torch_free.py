"""The adapter format and the control plane's adapter checks import no torch, transformers or peft."""

from __future__ import annotations

import subprocess
import sys

MODULES = [
    "loraplane.adapter_format",
    "loraplane.adapter_format.errors",
    "loraplane.adapter_format.files",
    "loraplane.adapter_format.matching",
    "loraplane.adapter_format.modules",
    "loraplane.adapter_format.peft_config",
    "loraplane.adapter_format.resolve",
    "loraplane.control_plane.validation",
    "loraplane.control_plane.sources",
]


def test_imports_no_torch():
    code = (
        f"import sys, {', '.join(MODULES)};"
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'loraplane.inference_worker') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
