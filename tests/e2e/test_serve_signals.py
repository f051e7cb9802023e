"""Ctrl-C or SIGTERM while `loraplane serve` is still starting stops every child it started (the
children run in their own sessions, so the supervisor must forward the stop), without a traceback."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from e2e_support import UpProcess

from loraplane.supervisor import free_port


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_startup_stops_every_child(tmp_path, signum):
    argv = ["serve", "--host", "127.0.0.1", "--port", str(free_port()), "--data-dir", str(tmp_path / "data")]
    serve = UpProcess([*argv, "--control-plane-port", "0", "--max-model-len", "256"], tmp_path / "serve.log")
    try:
        deadline = time.monotonic() + 60
        while "started worker-0" not in serve.log_path.read_text():
            assert serve.proc.poll() is None and time.monotonic() < deadline, serve.log_path.read_text()
            time.sleep(0.1)
        pids = [int(p) for p in re.findall(r"started [\w -]+ \(pid (\d+)\)", serve.log_path.read_text())]
        serve.proc.send_signal(signum)
        assert serve.proc.wait(timeout=40) == 0
        log = serve.log_path.read_text()
        assert len(pids) == 2 and not any(_alive(pid) for pid in pids), log
        assert "while starting; stopping what was started" in log and "Traceback" not in log
    finally:
        serve.stop()
