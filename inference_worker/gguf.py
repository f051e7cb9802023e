"""Convert a GGUF checkpoint (through transformers) into a plain HF safetensors directory, once per machine.

`converted_gguf(path)` returns `<cache root>/models/<stem>-<key>/` (`loraplane.cache.cache_root`), where the
key digests the GGUF file's content (sha256, memoized per path, size and mtime so a warm start does not
re-read it) and `CONVERTER_VERSION`: every process and every virtual environment of the machine that
sees the same file finds the same conversion, and a new file or a new converter gets a new one. A done
marker is written last and the directory is renamed into place, so a killed conversion leaves nothing
that looks finished; concurrent first calls (`up --workers 2`) serialize on an `fcntl` lock beside it and
the second one finds the first one's result.

The conversion itself (dequantize to fp32, write safetensors, config and tokenizer) runs in a child
process (`python -m loraplane.inference_worker.gguf GGUF TARGET`): its transformers model and the
allocator's high-water mark leave with it instead of staying in the serving process.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from loraplane.cache import cache_root
from loraplane.inference_worker.errors import ModelLoadError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

CONVERTER_VERSION = "2"  # bump when the converted output changes: earlier conversions are then redone
_DONE_MARKER = ".loraplane-converted"
_DIGESTS = "gguf-digests.json"


def is_converted(target: Path) -> bool:
    return (target / _DONE_MARKER).is_file()


def converted_dir(gguf: Path) -> Path:
    """Where the conversion of `gguf` lives: `<cache root>/models/<stem>-<content digest + converter>`."""
    key = hashlib.sha256(f"{file_digest(gguf)}:{CONVERTER_VERSION}".encode()).hexdigest()[:16]
    return cache_root() / "models" / f"{gguf.stem}-{key}"


def file_digest(path: Path) -> str:
    """sha256 of the file, remembered per (real path, size, mtime) in the cache so that it is read once."""
    stat = path.stat()
    stamp = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    index_path = cache_root() / "models" / _DIGESTS
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    if stamp in index:
        return index[stamp]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    index[stamp] = digest.hexdigest()
    index_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = index_path.with_suffix(f".{time.monotonic_ns()}.tmp")
    tmp.write_text(json.dumps(index))
    tmp.replace(index_path)  # atomic: concurrent writers lose an entry at worst, never the file
    return index[stamp]


def converted_gguf(gguf: Path) -> str:
    """The HF directory converted from `gguf`, converting it first if this machine has not yet."""
    target = converted_dir(gguf)
    if is_converted(target):
        logger.info("model: using the conversion of %s cached in %s", gguf.name, target)
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes or the process dies
        if is_converted(target):  # another process converted it while we waited
            logger.info("model: using the conversion of %s another process just made", gguf.name)
            return str(target)
        convert_gguf(gguf, target)
    return str(target)


def convert_gguf(gguf: Path, target: Path) -> None:
    """Run the one-time conversion of `gguf` into `target` in a child process (its output and progress
    bars go to this process's terminal); ModelLoadError when it fails."""
    logger.info("model: converting %s to safetensors in %s (once per machine)", gguf, target)
    started = time.monotonic()
    argv = [sys.executable, "-P", "-m", "loraplane.inference_worker.gguf", str(gguf), str(target)]
    result = subprocess.run(argv, check=False)
    if result.returncode != 0 or not is_converted(target):
        raise ModelLoadError(f"{gguf}: converting the GGUF file failed (exit code {result.returncode})")
    logger.info("model: converted %s in %.1f s", gguf.name, time.monotonic() - started)


def write_conversion(gguf: Path, target: Path) -> None:
    """Dequantize `gguf` to fp32 safetensors + config + tokenizer files in `target` (atomic rename)."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    steps = tqdm(total=3, desc=f"converting {gguf.name}", unit="step", disable=None)
    try:
        steps.set_postfix_str("dequantizing")
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        steps.update()
        steps.set_postfix_str("writing safetensors")
        _save_plain(model, tmp)
        del model
        steps.update()
        steps.set_postfix_str("tokenizer")
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(tmp)
        steps.update()
        (tmp / _DONE_MARKER).write_text(f"{gguf}\nconverter {CONVERTER_VERSION}\n")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        steps.close()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


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


if __name__ == "__main__":
    write_conversion(Path(sys.argv[1]), Path(sys.argv[2]))
