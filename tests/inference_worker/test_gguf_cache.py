"""The GGUF conversion cache: converted once per machine, keyed by the file's content and the converter."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loraplane.inference_worker import gguf


@pytest.fixture
def conversions(tmp_path, monkeypatch) -> list[tuple[Path, Path]]:
    """A cache root under tmp_path and a spy in place of the converter (it writes a finished directory)."""
    monkeypatch.setenv("LORAPLANE_CACHE", str(tmp_path / "cache"))
    calls: list[tuple[Path, Path]] = []

    def fake_convert(source: Path, target: Path) -> None:
        calls.append((source, target))
        target.mkdir(parents=True, exist_ok=True)
        (target / "config.json").write_text("{}")
        (target / gguf._DONE_MARKER).write_text(str(source))

    monkeypatch.setattr(gguf, "convert_gguf", fake_convert)
    return calls


def _gguf_file(folder: Path, content: bytes = b"GGUF model bytes") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "Model.Q4_1.gguf"
    path.write_bytes(content)
    return path


def test_the_second_load_reuses_the_conversion(tmp_path, conversions, caplog):
    source = _gguf_file(tmp_path / "site-packages")
    first = gguf.converted_gguf(source)
    with caplog.at_level(logging.INFO, logger=gguf.__name__):
        second = gguf.converted_gguf(source)
    assert first == second and len(conversions) == 1
    assert Path(first).parent == tmp_path / "cache" / "models" and Path(first).name.startswith("Model.Q4_1-")
    assert "using the conversion" in caplog.text


def test_the_same_file_in_another_environment_reuses_it(tmp_path, conversions):
    first = gguf.converted_gguf(_gguf_file(tmp_path / "venv-a"))
    copy = tmp_path / "venv-b" / "Model.Q4_1.gguf"
    copy.parent.mkdir()
    shutil.copyfile(tmp_path / "venv-a" / "Model.Q4_1.gguf", copy)
    os.utime(copy, ns=(1, 1))  # another install: another path and mtime, the same bytes
    assert gguf.converted_gguf(copy) == first and len(conversions) == 1


def test_another_file_or_converter_version_converts_again(tmp_path, conversions, monkeypatch):
    source = _gguf_file(tmp_path / "a")
    first = gguf.converted_gguf(source)
    changed = gguf.converted_gguf(_gguf_file(tmp_path / "a", b"other GGUF bytes"))
    monkeypatch.setattr(gguf, "CONVERTER_VERSION", "test-next")
    upgraded = gguf.converted_gguf(source)
    assert len({first, changed, upgraded}) == 3 and len(conversions) == 3


def test_an_unfinished_conversion_is_not_taken_for_a_done_one(tmp_path, conversions):
    source = _gguf_file(tmp_path / "a")
    target = gguf.converted_dir(source)
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"half written")  # no done marker
    assert gguf.converted_gguf(source) == str(target) and len(conversions) == 1


def test_another_process_finds_the_conversion_without_converting(tmp_path, conversions):
    source = _gguf_file(tmp_path / "a")
    target = gguf.converted_gguf(source)
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
        "from pathlib import Path\n"
        "from loraplane.inference_worker import gguf\n"
        "def refuse(*args): raise SystemExit('converted again')\n"
        "gguf.convert_gguf = refuse\n"
        f"print(gguf.converted_gguf(Path({str(source)!r})))\n"
    )
    env = {**os.environ, "LORAPLANE_CACHE": str(tmp_path / "cache")}
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith(target) and "using the conversion" in out.stdout
