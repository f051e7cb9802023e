"""One control plane per data dir: the lock on `control-plane.lock`, in process and across processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from process import ControlPlaneProcess

from loraplane.control_plane.data_dir import LOCK_NAME, DataDirInUseError, DataDirLock, holder
from loraplane.control_plane.server import ControlPlaneServer
from tests.control_plane.conftest import ADMIN_TOKEN, make_config


def test_lock_names_its_holder_and_is_released(tmp_path):
    assert holder(tmp_path / "data") is None  # nothing created by asking
    lock = DataDirLock.acquire(tmp_path / "data")
    lock.set_address("127.0.0.1:5555")
    running = holder(tmp_path / "data")
    assert running is not None and (running.pid, running.address) == (os.getpid(), "127.0.0.1:5555")
    with pytest.raises(DataDirInUseError, match=rf"pid {os.getpid()} on 127\.0\.0\.1:5555.*--data-dir"):
        DataDirLock.acquire(tmp_path / "data")
    lock.release()
    assert holder(tmp_path / "data") is None
    DataDirLock.acquire(tmp_path / "data").release()


async def test_second_server_on_the_same_data_dir_is_refused_before_touching_it(tmp_path, adapter_root):
    first = ControlPlaneServer(make_config(tmp_path, adapter_root))
    port = await first.start()
    try:
        with pytest.raises(DataDirInUseError, match=rf"pid {os.getpid()} on 127\.0\.0\.1:{port}"):
            ControlPlaneServer(make_config(tmp_path, adapter_root))
        # another folder is another registry: both serve side by side
        other = ControlPlaneServer(make_config(tmp_path, adapter_root, data_dir=tmp_path / "other"))
        await other.start()
        await other.stop()
    finally:
        await first.stop()
    again = ControlPlaneServer(make_config(tmp_path, adapter_root))  # stop() released the lock
    await again.stop()


def test_second_control_plane_process_fails_at_once_naming_the_first(tmp_path):
    (tmp_path / "adapters").mkdir()
    first = ControlPlaneProcess(tmp_path / "data", tmp_path / "adapters", ADMIN_TOKEN)
    first.start()
    try:
        second = subprocess.run(first.args, env=first.env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1, second.stderr
        expected = f"pid {first.proc.pid} on {first.target}"
        assert expected in second.stderr and "--data-dir" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        assert first.proc.poll() is None  # the first one is untouched
    finally:
        first.kill9()
    # the kernel drops the lock of a killed process: a restart never waits for a stale file
    assert (tmp_path / "data" / LOCK_NAME).exists()
    restarted = ControlPlaneProcess(tmp_path / "data", tmp_path / "adapters", ADMIN_TOKEN)
    restarted.start()
    assert restarted.stop() == 0


def test_control_plane_port_in_use_names_the_flag(tmp_path):
    (tmp_path / "adapters").mkdir()
    first = ControlPlaneProcess(tmp_path / "a", tmp_path / "adapters", ADMIN_TOKEN)
    first.start()
    try:
        argv = [sys.executable, "-m", "loraplane.control_plane", "--listen", first.target]
        second = subprocess.run(
            [*argv, "--data-dir", str(tmp_path / "b")], capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 1
        assert f"port {first.port} is in use (another server?): pass --listen" in second.stderr, second.stderr
    finally:
        assert first.stop() == 0
