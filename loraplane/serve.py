"""`loraplane serve [MODEL] --enable-lora --lora-modules ...`: everything in one command, vLLM style.

Starts the control plane (SQLite in --data-dir), one worker and the gateway as supervised child
processes, registers --lora-modules through the control plane, prints where things listen, and stops
them together on Ctrl-C / SIGTERM or when one of them dies.
"""

from __future__ import annotations

import argparse

from loraplane.topology import add_model_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from loraplane import topology
    from loraplane.preflight import preflight

    modules = topology.prepare(args, "serve")
    if modules is None:
        return 2
    if not preflight(args, "serve"):
        return 1

    def start(sup) -> list[str]:
        control_plane = topology.start_control_plane(sup, args, modules)
        worker = topology.start_worker(sup, args, 0, control_plane.address)
        topology.wait_workers(sup, [worker], args.tls)
        topology.register_modules(control_plane.address, modules, args.tls)
        gateway = topology.start_gateway(sup, args.host, args.port, control_plane.address, tls=args.tls)
        hint = topology.admin_hint(control_plane.address)
        return [
            f"control plane on {control_plane.address} (pid {control_plane.proc.pid}; {hint}), "
            f"metrics {control_plane.metrics}",
            f"worker-0 on {worker.address} (pid {worker.proc.pid}), metrics {worker.metrics}",
            f"ready: OpenAI API at {gateway.address}/v1 (pid {gateway.proc.pid})",
        ]

    return topology.run_supervised("serve", start)
