"""Checks `loraplane serve` and `loraplane up` make before starting anything.

They fail in a second with a message naming what to change, where a late failure would cost a model load
(minutes on a CPU) and leave a half-started topology: the data dir must not be held by a running control
plane (control_plane.data_dir), and the ports the command binds must be free (loraplane.ports).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def preflight(args: argparse.Namespace, command: str) -> bool:
    """Fail fast, before any process starts or any model loads: the data dir must be free (one control
    plane per data dir) and the ports this command binds must be free. False after printing why."""
    from loraplane.control_plane.data_dir import holder
    from loraplane.ports import PortInUseError, check_ports

    data_dir = Path(args.data_dir).expanduser()
    running = holder(data_dir)
    if running is not None:
        print(f"loraplane {command}: {running.describe(data_dir)}", file=sys.stderr)
        return False
    ports = [(args.host, args.port, "--port")]
    if args.control_plane_port:
        ports.append(("127.0.0.1", args.control_plane_port, "--control-plane-port"))
    try:
        check_ports(ports)
    except PortInUseError as exc:
        print(f"loraplane {command}: {exc}", file=sys.stderr)
        return False
    return True
