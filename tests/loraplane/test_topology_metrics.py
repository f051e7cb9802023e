"""`loraplane serve/up` give the control plane and every worker a free metrics port and say where it is."""

from __future__ import annotations

import argparse

from loraplane import serve, topology
from loraplane.supervisor import Child
from loraplane.tls import tls_from_args


class RecordingSupervisor:
    """Records the children `topology` would start; they are ready at once."""

    def __init__(self) -> None:
        self.started: dict[str, list[str]] = {}

    def python_module(self, name: str, args, address: str = "", critical: bool = True) -> Child:
        self.started[name] = list(args)
        return Child(name, proc=None, address=address, critical=critical)

    def wait_until(self, child, ready, timeout_s, what) -> None:
        pass


def flag_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_control_plane_and_workers_get_their_own_metrics_ports(monkeypatch, tmp_path):
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    args = parser.parse_args(["--data-dir", str(tmp_path)])
    args.tls = tls_from_args(args)
    monkeypatch.setattr(topology, "grpc_healthy", lambda *a, **k: True)
    monkeypatch.setattr(Child, "listens_on", lambda self, address: True)
    sup = RecordingSupervisor()
    control_plane = topology.start_control_plane(sup, args, [])
    workers = [topology.start_worker(sup, args, i, control_plane.address) for i in range(2)]
    ports = {name: int(flag_value(argv, "--metrics-port")) for name, argv in sup.started.items()}
    assert set(ports) == {"control plane", "worker-0", "worker-1"}
    assert all(ports.values())
    for child in (control_plane, *workers):
        port = ports[child.name]
        assert child.metrics == f"http://127.0.0.1:{port}/metrics"
