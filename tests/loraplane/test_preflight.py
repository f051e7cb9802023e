"""Start-up checks before any model work: taken ports and a held data dir fail at once, naming the flag
(or the running control plane), and nothing is started; `ready` needs the child's own socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from loraplane.control_plane.data_dir import DataDirLock
from loraplane.ports import PortInUseError, check_port, check_ports
from loraplane.supervisor import listens


@pytest.fixture
def taken_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def loraplane(*argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORAPLANE_")}
    command = [sys.executable, "-P", "-m", "loraplane", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def test_check_port(taken_port):
    check_port("127.0.0.1", 0, "--port")  # any free port
    with pytest.raises(PortInUseError, match=rf"^port {taken_port} is in use \(another server\?\): pass --x"):
        check_ports([("127.0.0.1", 0, "--y"), ("127.0.0.1", taken_port, "--x")])
    with pytest.raises(PortInUseError, match="pass --port"):
        check_port("0.0.0.0", taken_port, "--port")  # all addresses include the taken loopback one


def test_listens_tells_the_childs_socket_from_another_servers(taken_port):
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs Linux /proc")
    assert listens(os.getpid(), taken_port)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not listens(child.pid, taken_port)
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("command", ["serve", "up"])
def test_taken_port_fails_before_anything_starts(tmp_path, taken_port, command):
    done = loraplane(command, "--host", "127.0.0.1", "--port", str(taken_port), "--data-dir", str(tmp_path))
    assert done.returncode == 1, done.stderr
    assert f"port {taken_port} is in use (another server?): pass --port to choose another" in done.stderr
    assert "started" not in done.stderr and "ready" not in done.stdout  # no child, no model load


def test_taken_control_plane_port_names_its_flag(tmp_path, taken_port):
    done = loraplane(
        "serve", "--port", "0", "--control-plane-port", str(taken_port), "--data-dir", str(tmp_path)
    )
    assert done.returncode == 1
    assert f"port {taken_port} is in use (another server?): pass --control-plane-port" in done.stderr


def test_serve_on_a_held_data_dir_names_the_running_control_plane(tmp_path):
    lock = DataDirLock.acquire(tmp_path / "data")
    lock.set_address("127.0.0.1:50999")
    try:
        done = loraplane("serve", "--port", "0", "--data-dir", str(tmp_path / "data"))
    finally:
        lock.release()
    assert done.returncode == 1
    assert f"is in use by the control plane with pid {os.getpid()} on 127.0.0.1:50999" in done.stderr
    assert "started" not in done.stderr


def test_worker_and_gateway_check_their_port_first(taken_port):
    worker = loraplane("worker", "--listen", f"127.0.0.1:{taken_port}")
    assert worker.returncode == 1
    assert f"port {taken_port} is in use (another server?): pass --listen" in worker.stderr
    assert "loading the model" not in worker.stderr
    metrics = loraplane("worker", "--listen", "127.0.0.1:0", "--metrics-port", str(taken_port))
    assert metrics.returncode == 1 and "pass --metrics-port" in metrics.stderr, metrics.stderr
    gateway = loraplane("gateway", "--port", str(taken_port), "--control-plane", "127.0.0.1:1")
    assert gateway.returncode == 1
    assert f"port {taken_port} is in use (another server?): pass --port" in gateway.stderr


def test_another_server_answering_health_never_makes_a_failed_child_ready(monkeypatch):
    """The gateway child fails to bind (as uvicorn does on a taken port) while another server answers
    /health 200 on that port: start-up fails naming the child, instead of printing `ready`."""
    import http.server
    import threading

    from loraplane import topology
    from loraplane.supervisor import Supervisor

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    other = http.server.HTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    bind_fails = [sys.executable, "-c", "import sys, time; time.sleep(1); sys.exit(1)"]
    sup = Supervisor(grace_s=1)
    monkeypatch.setattr(sup, "python_module", lambda name, args, **kw: sup.start(name, bind_fails, **kw))
    try:
        with pytest.raises(RuntimeError, match="gateway exited with code 1 before ready"):
            topology.start_gateway(sup, "127.0.0.1", other.server_port, "127.0.0.1:1")
        sup.children.clear()
        sup.start("sleeper", [sys.executable, "-c", "import time; time.sleep(0.2)"])
        sup.children[0].proc.wait()
        with pytest.raises(RuntimeError, match="sleeper exited with code 0 while starting"):
            sup.check_alive()
    finally:
        other.shutdown()
        sup.stop_all()
