"""`loraplane up --workers N [--envoy]`: the multi-process topology on one machine.

Control plane, N workers (worker-0 ... worker-N-1), one gateway and, with --envoy, the edge Envoy on
--port (the gateway then listens on a loopback port behind it). The edge publishes the OpenAI routes,
Inference gRPC and the registry's reads; `--expose-admin` also publishes the registry's writes and
ListWorkers behind the admin token (LORAPLANE_ADMIN_TOKEN, else the one kept in the data dir:
loraplane.tokens); the worker stream is never published. Prints where
everything listens, one line per process, then `ready`; stops everything on Ctrl-C / SIGTERM or when
the control plane, the gateway or Envoy dies. A worker that dies is logged and routed around while
another worker lives.
"""

from __future__ import annotations

import argparse
import sys

from loraplane.topology import add_model_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--workers", type=int, default=2, help="number of inference workers (default: 2)")
    parser.add_argument("--envoy", action="store_true", help="put the edge Envoy in front (on --port)")
    parser.add_argument(
        "--expose-admin",
        action="store_true",
        help="with --envoy: also publish the registry's create/delete and ListWorkers on the edge, behind "
        "the admin token (LORAPLANE_ADMIN_TOKEN, else made once and kept in --data-dir; default: reads only)",
    )


def _start(sup, args, modules) -> list[tuple[str, object]]:
    from loraplane import topology
    from loraplane.supervisor import free_port

    control_plane = topology.start_control_plane(sup, args, modules)
    workers = [
        topology.start_worker(sup, args, i, control_plane.address, critical=args.workers == 1)
        for i in range(args.workers)
    ]
    topology.wait_workers(sup, workers, args.tls)
    topology.register_modules(control_plane.address, modules, args.tls)
    gateway_host, gateway_port = ("127.0.0.1", free_port()) if args.envoy else (args.host, args.port)
    gateway = topology.start_gateway(
        sup, gateway_host, gateway_port, control_plane.address, tls=args.tls, https=not args.envoy
    )
    started = [
        ("control-plane", control_plane),
        *((w.name, w) for w in workers),
        ("gateway", gateway),
    ]
    if args.envoy:
        envoy = topology.start_envoy(sup, args, [gateway_port], workers, control_plane.address)
        started.append(("envoy", envoy))
    return started


def run(args: argparse.Namespace) -> int:
    from loraplane import topology
    from loraplane.preflight import preflight

    if args.workers < 1:
        print("loraplane up: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.expose_admin and not args.envoy:
        print(
            "loraplane up: --expose-admin needs --envoy (it publishes the edge's admin routes)",
            file=sys.stderr,
        )
        return 2
    modules = topology.prepare(args, "up")
    if modules is None:
        return 2
    if not preflight(args, "up"):
        return 1

    def start(sup) -> list[str]:
        started = _start(sup, args, modules)
        lines = []
        for name, child in started:
            hint = f"; {topology.admin_hint(child.address)}" if name == "control-plane" else ""
            metrics = f", metrics {child.metrics}" if child.metrics else ""
            lines.append(f"{name} on {child.address} (pid {child.proc.pid}{hint}){metrics}")
        return [*lines, f"ready: OpenAI API at {started[-1][1].address.split(' ')[0]}/v1"]

    return topology.run_supervised("up", start)
