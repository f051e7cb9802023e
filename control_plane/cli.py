"""`loraplane control-plane`: run the adapter registry and the worker command server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from loraplane.control_plane.config import (
    DEFAULT_ADMIN_TOKEN_ENV,
    DEFAULT_LISTEN,
    DEFAULT_MAX_RECEIVE_BYTES,
    DEFAULT_WORKER_TOKEN_ENV,
    ControlPlaneConfig,
)
from loraplane.metrics import add_metrics_port_argument
from loraplane.tls import add_tls_arguments, tls_from_args

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT to serve on; port 0 picks one ({DEFAULT_LISTEN})"
    )
    parser.add_argument(
        "--data-dir", default="loraplane-data", help="folder of the SQLite registry (loraplane-data)"
    )
    parser.add_argument(
        "--adapter-root",
        action="append",
        default=[],
        metavar="DIR",
        help="folder local adapter sources must lie under (repeatable; relative sources use the first)",
    )
    parser.add_argument(
        "--allow-hub-sources", action="store_true", help="accept Hugging Face hub ids as sources"
    )
    parser.add_argument(
        "--admin-token-env",
        default=DEFAULT_ADMIN_TOKEN_ENV,
        help=f"env var holding the admin token for create/delete ({DEFAULT_ADMIN_TOKEN_ENV}; unset = open)",
    )
    parser.add_argument(
        "--worker-token-env",
        default=DEFAULT_WORKER_TOKEN_ENV,
        help=f"env var holding the token workers must send ({DEFAULT_WORKER_TOKEN_ENV}); required when "
        "--listen is beyond loopback, else unset = open to local processes",
    )
    parser.add_argument(
        "--rollout-timeout", type=float, default=30.0, help="seconds CreateAdapter waits for workers"
    )
    parser.add_argument(
        "--heartbeat-interval", type=int, default=5, help="seconds between worker heartbeats (5)"
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=15.0,
        help="seconds of silence before a worker is marked down",
    )
    parser.add_argument(
        "--max-receive-bytes",
        type=int,
        default=DEFAULT_MAX_RECEIVE_BYTES,
        help="largest request accepted (4 MiB)",
    )
    add_metrics_port_argument(parser)
    add_tls_arguments(parser, "its gRPC port")


def build_config(args: argparse.Namespace) -> ControlPlaneConfig:
    return ControlPlaneConfig.from_env(
        admin_token_env=args.admin_token_env,
        worker_token_env=args.worker_token_env,
        listen=args.listen,
        data_dir=args.data_dir,
        adapter_roots=tuple(args.adapter_root),
        allow_hub_sources=args.allow_hub_sources,
        rollout_timeout_s=args.rollout_timeout,
        heartbeat_interval_s=args.heartbeat_interval,
        heartbeat_timeout_s=args.heartbeat_timeout,
        max_receive_bytes=args.max_receive_bytes,
        tls=tls_from_args(args),
        metrics_port=args.metrics_port,
    )


async def serve(config: ControlPlaneConfig) -> None:
    """Run until SIGINT/SIGTERM, then stop gracefully."""
    from loraplane.control_plane.server import ControlPlaneServer

    # Handlers first: a SIGTERM right after the "listening" line must still stop gracefully.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    server = ControlPlaneServer(config)  # takes the data dir's lock: DataDirInUseError if another has it
    try:
        port = await server.start()
        host = config.listen.rsplit(":", 1)[0]
        print(f"control plane listening on {host}:{port}", flush=True)
        if server.metrics_server is not None:
            print(f"control plane metrics on http://{server.metrics_server.address}/metrics", flush=True)
        await stop.wait()
        logger.info("shutting down")
    finally:
        await server.stop()


def run(args: argparse.Namespace) -> int:
    try:
        config = build_config(args)
    except ValueError as exc:
        print(f"loraplane control-plane: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config))
    except RuntimeError as exc:
        print(f"loraplane control-plane: {exc}", file=sys.stderr)
        return 1
    return 0
