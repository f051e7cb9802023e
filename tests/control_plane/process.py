"""Run the control plane as a real child process (`python -m control_plane`) for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

_LISTENING = re.compile(r"control plane listening on ([\d.]+):(\d+)")


class ControlPlaneProcess:
    def __init__(self, data_dir: Path, adapter_root: Path, admin_token: str, port: int = 0) -> None:
        self.args = [
            sys.executable, "-m", "loraplane.control_plane", "--log-level", "WARNING",
            "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir), "--adapter-root", str(adapter_root),
            "--heartbeat-interval", "1", "--heartbeat-timeout", "3", "--rollout-timeout", "5",
        ]  # fmt: skip
        self.env = {**os.environ, "LORAPLANE_ADMIN_TOKEN": admin_token}
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> int:
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        match = _LISTENING.search(line)
        if match is None:
            self.proc.kill()
            raise RuntimeError(f"control plane did not start: {line!r}")
        self.port = int(match.group(2))
        return self.port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
