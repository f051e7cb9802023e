"""The C++ CPU extensions build at most once per environment: a fresh process loads the cached library
without running ninja or a compiler, concurrent first builds build once, and a CPU without AVX-512 or a
failing compiler falls back to the references with one log line."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest
import torch

from loraplane.kernels import cpu_gemm, cpu_ops, fused_ops, native

needs_native = pytest.mark.skipif(cpu_ops.native_ops() is None, reason="needs the AVX-512 extension")


@pytest.fixture(autouse=True)
def _triton_on_cpu():
    """Overrides the package fixture: no Triton here."""
    yield


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", textwrap.dedent(code), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("loader", "fallback"),
    [
        (cpu_ops.native_ops, "the PyTorch references run"),
        (cpu_gemm.panel_kernels, "fp32 decode GEMMs use oneDNN"),
    ],
)
def test_without_avx512_the_fallback_serves_with_one_log_line(monkeypatch, caplog, loader, fallback):
    monkeypatch.setattr(native, "avx512_supported", lambda: False)
    loader.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger=native.__name__):
            assert loader() is None
        assert [r.getMessage() for r in caplog.records] == [f"CPU lacks AVX-512: {fallback}"]
    finally:
        loader.cache_clear()


def test_without_the_extension_fp32_rows_take_the_references(monkeypatch):
    monkeypatch.setattr(cpu_ops, "native_ops", lambda: None)
    x, weight = torch.randn(3, 64), torch.randn(64)
    want = fused_ops.rms_norm_ref(x, weight, 1e-5)
    assert torch.equal(fused_ops.add_rms_norm(x, None, weight, 1e-5)[0], want)


def test_a_failing_compiler_falls_back_with_one_log_line(monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(native, "avx512_supported", lambda: True)
    monkeypatch.setenv("LORAPLANE_CACHE", str(tmp_path))

    def no_compiler(**_):
        raise RuntimeError("g++: not found")

    monkeypatch.setattr("torch.utils.cpp_extension.load", no_compiler)
    with caplog.at_level(logging.WARNING, logger=native.__name__):
        assert native.load_extension(cpu_gemm.CPU_GEMM, "oneDNN serves") is None
    assert [r.getMessage() for r in caplog.records] == [
        "building loraplane_cpu_gemm failed (g++: not found): oneDNN serves"
    ]
    assert not list(tmp_path.glob(f"kernels/*/{native.BUILT_STAMP}"))  # a later start tries again


def test_the_build_key_covers_sources_and_flags(tmp_path):
    source = tmp_path / "a.cpp"
    source.write_text("int a;")
    key = native.build_key("x", [source], ["-O3"], [])
    assert native.build_key("x", [source], ["-O2"], []) != key
    assert native.build_key("x", [source], ["-O3"], ["-fopenmp"]) != key
    source.write_text("int b;")
    assert native.build_key("x", [source], ["-O3"], []) != key


def test_builds_live_under_the_loraplane_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LORAPLANE_CACHE", str(tmp_path))
    directory = cpu_gemm.CPU_GEMM.directory()
    assert directory.parent == tmp_path / "kernels" and directory.name.startswith("loraplane_cpu_gemm-")
    with pytest.raises(ValueError, match="identifier"):
        native.Extension("cpu-gemm", "cpu_gemm.cpp")


@needs_native
def test_a_fresh_process_loads_the_cached_build_without_compiling():
    stamps = sorted(native.cache_root().glob(f"kernels/*/{native.BUILT_STAMP}"))
    before = {stamp: stamp.stat().st_mtime_ns for stamp in stamps}
    code = """
        import subprocess
        import torch.utils.cpp_extension

        def refuse(*args, **kwargs):
            raise AssertionError("a build ran")

        torch.utils.cpp_extension.load = subprocess.Popen = refuse  # no ninja, no g++
        from loraplane.kernels import cpu_gemm, cpu_ops

        print(cpu_ops.native_ops().__file__)
        print(cpu_gemm.panel_kernels().__file__)
    """
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert [line.rsplit("/", 1)[-1] for line in result.stdout.split()] == [
        "loraplane_cpu_ops.so",
        "loraplane_cpu_gemm.so",
    ]
    assert {stamp: stamp.stat().st_mtime_ns for stamp in stamps} == before


@needs_native
def test_concurrent_first_builds_build_once(tmp_path):
    """Two processes start on an empty cache at once: one builds (here: copies the real library, so no
    compiler runs), the other waits on the lock, then loads that build."""
    assert cpu_gemm.panel_kernels() is not None
    code = """
        import os, shutil, sys, time
        from pathlib import Path

        real, log = Path(sys.argv[1]), Path(sys.argv[2])
        os.environ["LORAPLANE_CACHE"] = sys.argv[3]
        from loraplane.kernels import cpu_gemm, native

        def fake_build(extension, directory):
            with open(log, "a") as f:
                f.write(f"{os.getpid()}\\n")
            time.sleep(1.0)  # the other process reaches the lock meanwhile
            shutil.copy(real / f"{extension.name}.so", directory)
            (directory / native.BUILT_STAMP).touch()
            return native.load_prebuilt(extension.name, directory)

        native._build = fake_build
        assert cpu_gemm.panel_kernels() is not None
    """
    log = tmp_path / "builds.log"
    args = [str(cpu_gemm.CPU_GEMM.directory()), str(log), str(tmp_path / "cache")]
    command = [sys.executable, "-c", textwrap.dedent(code), *args]
    procs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert len(log.read_text().split()) == 1
