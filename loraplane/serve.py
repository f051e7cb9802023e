"""`loraplane serve [MODEL] --enable-lora --lora-modules ...`: everything in one command, vLLM style.

Starts the control plane (SQLite in --data-dir), one worker and the gateway as supervised child
processes, registers --lora-modules through the control plane, prints where things listen, and stops
them together on Ctrl-C / SIGTERM or when one of them dies.
"""

from __future__ import annotations

import argparse
import logging

from loraplane.topology import add_model_arguments

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from loraplane import topology
    from loraplane.supervisor import Supervisor

    modules = topology.prepare(args, "serve")
    if modules is None:
        return 2
    sup = Supervisor()
    try:
        control_plane = topology.start_control_plane(sup, args, modules)
        worker = topology.start_worker(sup, args, 0, control_plane.address)
        topology.wait_workers(sup, [worker])
        topology.register_modules(control_plane.address, modules)
        gateway = topology.start_gateway(sup, args.host, args.port, control_plane.address)
    except (RuntimeError, OSError) as exc:
        log.error("loraplane serve failed to start: %s", exc)
        sup.stop_all()
        return 1
    except BaseException:
        sup.stop_all()
        raise
    hint = topology.admin_hint(control_plane.address)
    print(
        f"loraplane: control plane on {control_plane.address} (pid {control_plane.proc.pid}; {hint})",
        flush=True,
    )
    print(f"loraplane: worker-0 on {worker.address} (pid {worker.proc.pid})", flush=True)
    print(f"loraplane: ready: OpenAI API at {gateway.address}/v1 (pid {gateway.proc.pid})", flush=True)
    return sup.supervise()
