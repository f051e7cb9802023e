"""`loraplane gateway`: the OpenAI-compatible REST gateway in front of the inference workers."""

from __future__ import annotations

import argparse
import sys

from loraplane.gateway.auth import add_api_key_arguments
from loraplane.gateway.config import (
    DEFAULT_MAX_N,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_PORT,
    UVICORN_LOG_LEVELS,
)
from loraplane.tls import add_tls_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1; 0.0.0.0 publishes it on every interface)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"HTTP port (default: {DEFAULT_PORT})")
    parser.add_argument(
        "--control-plane",
        default=None,
        help="control plane HOST:PORT to learn workers from (default: env LORAPLANE_CONTROL_PLANE)",
    )
    parser.add_argument(
        "--worker",
        action="append",
        default=None,
        metavar="HOST:PORT",
        help="a worker's Inference address, repeatable (static routing; env LORAPLANE_WORKERS=a,b)",
    )
    parser.add_argument(
        "--refresh-interval", type=float, default=None, help="seconds between worker refreshes"
    )
    parser.add_argument(
        "--allow-runtime-lora-updating",
        action="store_true",
        default=None,
        help="mount /v1/load_lora_adapter and /v1/unload_lora_adapter "
        "(also env LORAPLANE_ALLOW_RUNTIME_LORA_UPDATING=true); callers send the control plane's admin "
        "token as 'Authorization: Bearer TOKEN' when it has one",
    )
    parser.add_argument(
        "--max-request-bytes",
        type=int,
        default=None,
        help="largest request body accepted, in bytes; larger bodies, with or without Content-Length, get "
        f"413 before they are parsed (default: {DEFAULT_MAX_REQUEST_BYTES}, 8 MiB; vLLM has no such limit)",
    )
    parser.add_argument(
        "--max-n",
        type=int,
        default=None,
        help=f"most choices per prompt (`n`) a request may ask for; more gets 400 (default: {DEFAULT_MAX_N}, "
        "OpenAI's maximum)",
    )
    add_tls_arguments(parser, "its gRPC channels to workers and the control plane (client certificate)")
    parser.add_argument(
        "--ssl-certfile", default=None, metavar="PEM", help="serve HTTPS with this certificate"
    )
    parser.add_argument("--ssl-keyfile", default=None, metavar="PEM", help="private key of --ssl-certfile")
    add_api_key_arguments(parser)
    parser.add_argument(
        "--uvicorn-log-level",
        choices=UVICORN_LOG_LEVELS,
        default=None,
        help="level of uvicorn's own loggers (default: warning; env LORAPLANE_UVICORN_LOG_LEVEL)",
    )


def _https(args: argparse.Namespace):
    """The HTTPS listener's certificate and key (vLLM's --ssl-certfile/--ssl-keyfile), checked here so that
    a mistake names these flags."""
    from pathlib import Path

    from loraplane.tls import PLAINTEXT, TLSConfig

    files = (("--ssl-certfile", args.ssl_certfile), ("--ssl-keyfile", args.ssl_keyfile))
    if not any(path for _, path in files):
        return PLAINTEXT
    for flag, path in files:
        if not path:
            raise ValueError("--ssl-certfile and --ssl-keyfile go together")
        if not Path(path).expanduser().is_file():
            raise ValueError(f"{flag} {path}: no such file")
    return TLSConfig(cert=Path(args.ssl_certfile), key=Path(args.ssl_keyfile))


def run(args: argparse.Namespace) -> int:
    from loraplane.gateway.auth import api_key_from
    from loraplane.gateway.config import GatewayConfig
    from loraplane.gateway.server import serve
    from loraplane.tls import tls_from_args

    try:
        config = GatewayConfig.from_env(
            tls=tls_from_args(args),
            https=_https(args),
            host=args.host,
            port=args.port,
            control_plane=args.control_plane,
            workers=tuple(args.worker or ()),
            refresh_interval_s=args.refresh_interval,
            allow_runtime_lora_updating=args.allow_runtime_lora_updating,
            max_request_bytes=args.max_request_bytes,
            max_n=args.max_n,
            api_key=api_key_from(args),
            uvicorn_log_level=args.uvicorn_log_level,
        )
    except ValueError as exc:
        print(f"loraplane gateway: {exc}", file=sys.stderr)
        return 2
    from loraplane.ports import PortInUseError, check_port

    try:  # uvicorn binds only after the app's start-up; say so at once, naming the flag
        check_port(config.host, config.port, "--port")
    except PortInUseError as exc:
        print(f"loraplane gateway: {exc}", file=sys.stderr)
        return 1
    try:
        serve(config)
    except RuntimeError as exc:
        print(f"loraplane gateway: {exc}", file=sys.stderr)
        return 1
    return 0
