"""Helpers for end-to-end tests: demo-model adapters written from the model's config, and `loraplane up`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc


def write_random_adapter(model_dir: Path, out: Path, seed: int, r: int = 8) -> str:
    """A rank-`r` PEFT LoRA on q_proj/v_proj of every layer of the model in `model_dir`; random weights."""
    import torch
    from safetensors.torch import save_file

    cfg = json.loads((model_dir / "config.json").read_text())
    widths = {"q_proj": cfg["num_attention_heads"], "v_proj": cfg["num_key_value_heads"]}
    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for layer in range(cfg["num_hidden_layers"]):
        for name, heads in widths.items():
            key = f"base_model.model.model.layers.{layer}.self_attn.{name}"
            weights[key + ".lora_A.weight"] = 0.05 * torch.randn(r, cfg["hidden_size"], generator=gen)
            weights[key + ".lora_B.weight"] = 0.05 * torch.randn(heads * cfg["head_dim"], r, generator=gen)
    out.mkdir(parents=True)
    save_file(weights, str(out / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "r": r,
        "lora_alpha": 2 * r,
        "target_modules": list(widths),
        "bias": "none",
    }
    (out / "adapter_config.json").write_text(json.dumps(config))
    return str(out)


class UpProcess:
    """`loraplane up ...` in the background; `ready()` waits for its `ready` line and parses pids."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 (closed in stop)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loraplane", *argv], stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        self.pids: dict[str, int] = {}

    def ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while "loraplane: ready" not in self.log_path.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "loraplane up did not become ready:\n" + self.log_path.read_text()[-4000:]
                )
            time.sleep(0.5)
        for name, pid in re.findall(r"loraplane: (\S+) on .* \(pid (\d+)\)", self.log_path.read_text()):
            self.pids[name] = int(pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def control_plane_address(log: str) -> str:
    """The control plane's address from a `serve` or `up` log."""
    match = re.search(r"loraplane: control[ -]plane on (\S+)", log)
    assert match is not None, log[-2000:]
    return match.group(1)


def grpc_status(target: str, call, tls=None) -> grpc.StatusCode:
    """The status `call(channel)` ends with on a channel to `target` (plaintext unless `tls` is given)."""
    from loraplane.tls import PLAINTEXT, channel

    with channel(target, PLAINTEXT if tls is None else tls) as chan:
        try:
            call(chan)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def rogue_connect(target: str, worker_id: str = "rogue", token: str = "") -> grpc.StatusCode:
    """Open WorkerControl.Connect with a Hello (and `token`, when given) and return the status it ends with;
    OK means the control plane accepted the stranger and sent it a command."""
    from loraplane.worker.v1 import worker_pb2 as wk
    from loraplane.worker.v1 import worker_pb2_grpc

    hello = wk.ConnectRequest(hello=wk.Hello(worker_id=worker_id, endpoint="127.0.0.1:9"))
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    with grpc.insecure_channel(target) as channel:
        replies = worker_pb2_grpc.WorkerControlStub(channel).Connect(
            iter([hello]), metadata=metadata, timeout=10
        )
        try:
            next(replies)
        except grpc.RpcError as exc:
            return exc.code()
        replies.cancel()
    return grpc.StatusCode.OK
