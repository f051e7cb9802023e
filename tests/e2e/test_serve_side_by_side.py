"""Two `loraplane serve` in two folders run side by side untouched; a third on a folder in use fails at
once naming the running control plane (the quick start's second terminal, which used to take the first
server down: shared SQLite, both workers called worker-0, each gateway routing to the other's worker)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import grpc
import httpx
import pytest
from e2e_support import UpProcess, control_plane_address

from loraplane.registry.v1 import registry_pb2 as reg
from loraplane.registry.v1 import registry_pb2_grpc
from loraplane.supervisor import free_port

PHASES = ("control plane up in", "worker-0 model loaded and serving in", "gateway up in", "all components")


def serve_argv(folder, port: int) -> list[str]:
    argv = ["serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(folder / "data")]
    return [*argv, "--control-plane-port", "0", "--max-model-len", "256", "--max-num-seqs", "2"]


def complete(port: int) -> str:
    body = {"model": "SmolLM2-135M-Instruct", "prompt": "Hello", "max_tokens": 3, "temperature": 0}
    reply = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]["text"]


def workers_of(control_plane: str) -> list[tuple[str, str]]:
    with grpc.insecure_channel(control_plane) as channel:
        listed = registry_pb2_grpc.AdapterRegistryStub(channel).ListWorkers(
            reg.ListWorkersRequest(), timeout=10
        )
    return [(w.worker_id, w.endpoint) for w in listed.workers]


@pytest.mark.slow
def test_two_serves_in_two_folders_run_side_by_side(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    ports = {"a": free_port(), "b": free_port()}
    serves = {k: UpProcess(serve_argv(tmp_path / k, p), tmp_path / f"{k}.log") for k, p in ports.items()}
    try:
        for serve in serves.values():
            serve.ready(timeout_s=900)
        logs = {k: s.log_path.read_text() for k, s in serves.items()}
        for log in logs.values():
            assert all(phase in log for phase in PHASES), log[-3000:]
            assert "error while attempting to bind" not in log
        # each control plane knows only its own worker, at the address its own serve printed
        for key, log in logs.items():
            worker = re.search(r"loraplane: worker-0 on (\S+)", log).group(1)
            assert workers_of(control_plane_address(log)) == [("worker-0", worker)], key
        answers = {key: complete(port) for key, port in ports.items()}
        assert answers["a"] == answers["b"]  # the same model, greedy

        # a second serve on a folder in use fails at once, naming the running control plane
        env = {k: v for k, v in os.environ.items() if not k.startswith("LORAPLANE_")}
        argv = [sys.executable, "-P", "-m", "loraplane", *serve_argv(tmp_path / "a", free_port())]
        third = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
        control_plane_a = control_plane_address(logs["a"])
        assert third.returncode == 1 and f"on {control_plane_a}; stop it" in third.stderr, third.stderr
        pid_a = re.search(r"control plane on \S+ \(pid (\d+)", logs["a"]).group(1)
        assert f"pid {pid_a} on" in third.stderr and "started" not in third.stderr

        serves["a"].stop()  # one going away leaves the other untouched
        assert serves["a"].proc.returncode == 0
        assert complete(ports["b"]) == answers["b"]
        assert serves["b"].proc.poll() is None
    finally:
        for serve in serves.values():
            serve.stop()
