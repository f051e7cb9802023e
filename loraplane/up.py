"""`loraplane up --workers N [--envoy]`: the multi-process topology on one machine.

Control plane, N workers (worker-0 ... worker-N-1), one gateway and, with --envoy, the edge Envoy on
--port (the gateway then listens on a loopback port behind it). Prints where everything listens, one
line per process, then `ready`; stops everything on Ctrl-C / SIGTERM or when the control plane, the
gateway or Envoy dies. A worker that dies is logged and routed around while another worker lives.
"""

from __future__ import annotations

import argparse
import logging
import sys

from loraplane.topology import add_model_arguments

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--workers", type=int, default=2, help="number of inference workers (default: 2)")
    parser.add_argument("--envoy", action="store_true", help="put the edge Envoy in front (on --port)")


def _start(sup, args, modules) -> list[tuple[str, object]]:
    from loraplane import topology
    from loraplane.supervisor import free_port

    control_plane = topology.start_control_plane(sup, args, modules)
    workers = [
        topology.start_worker(sup, args, i, control_plane.address, critical=args.workers == 1)
        for i in range(args.workers)
    ]
    topology.wait_workers(sup, workers)
    topology.register_modules(control_plane.address, modules)
    gateway_host, gateway_port = ("127.0.0.1", free_port()) if args.envoy else (args.host, args.port)
    gateway = topology.start_gateway(sup, gateway_host, gateway_port, control_plane.address)
    started = [("control-plane", control_plane), *((w.name, w) for w in workers), ("gateway", gateway)]
    if args.envoy:
        envoy = topology.start_envoy(sup, args, [gateway_port], workers, control_plane.address)
        started.append(("envoy", envoy))
    return started


def run(args: argparse.Namespace) -> int:
    from loraplane import topology
    from loraplane.supervisor import Supervisor

    if args.workers < 1:
        print("loraplane up: --workers must be at least 1", file=sys.stderr)
        return 2
    modules = topology.prepare(args, "up")
    if modules is None:
        return 2
    sup = Supervisor()
    try:
        started = _start(sup, args, modules)
    except (RuntimeError, OSError) as exc:
        log.error("loraplane up failed to start: %s", exc)
        sup.stop_all()
        return 1
    except BaseException:
        sup.stop_all()
        raise
    for name, child in started:
        hint = f"; {topology.admin_hint(child.address)}" if name == "control-plane" else ""
        print(f"loraplane: {name} on {child.address} (pid {child.proc.pid}{hint})", flush=True)
    print(f"loraplane: ready: OpenAI API at {started[-1][1].address.split(' ')[0]}/v1", flush=True)
    return sup.supervise()
