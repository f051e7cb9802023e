"""Convert a GGUF checkpoint (through transformers) into a plain HF safetensors directory, once."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

_DONE_MARKER = ".loraplane-converted"


def is_converted(target: Path) -> bool:
    return (target / _DONE_MARKER).is_file()


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize `gguf` to fp32 safetensors + config + tokenizer files in `target` (atomic rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    logger.info("converting GGUF %s -> %s (one time)", gguf, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        logger.info("dequantizing GGUF weights to fp32")
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        logger.info("writing safetensors (%.1fs)", time.monotonic() - started)
        _save_plain(model, tmp)
        logger.info("converting tokenizer (%.1fs)", time.monotonic() - started)
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(tmp)
        (tmp / _DONE_MARKER).write_text(f"{gguf}\n")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("model ready at %s in %.1fs", target, time.monotonic() - started)


def _save_plain(model: PreTrainedModel, out: Path) -> None:
    """Write a GGUF-loaded model as a plain HF directory (transformers refuses to save GGUF models)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config
    config.architectures = [type(model).__name__]
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(out)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out)
