"""The `loraplane` command: one entry point whose subcommands live with their components.

Each subcommand is a module exposing `add_arguments(parser)` and `run(args) -> int`. Those modules
import nothing heavy at import time (no torch, no model code), so `loraplane --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass

from loraplane import observability


@dataclass(frozen=True)
class Subcommand:
    name: str
    module: str
    help: str


SUBCOMMANDS = (
    Subcommand("serve", "loraplane.serve", "run control plane, one worker and the gateway together"),
    Subcommand("up", "loraplane.up", "run a multi-worker topology on this machine, optionally behind Envoy"),
    Subcommand(
        "control-plane", "loraplane.control_plane.cli", "run the adapter registry and worker command server"
    ),
    Subcommand(
        "worker", "loraplane.inference_worker.service.cli", "run an inference worker (engine + gRPC server)"
    ),
    Subcommand("gateway", "loraplane.gateway.cli", "run the OpenAI-compatible REST gateway"),
    Subcommand("adapters", "loraplane.control_plane.admin_cli.adapters", "manage registered adapters"),
    Subcommand("workers", "loraplane.control_plane.admin_cli.workers", "list inference workers"),
)
# Subcommands that serve requests: they take --disable-log-requests and --otlp-traces-endpoint.
SERVING = frozenset({"serve", "up", "worker", "gateway"})


def _load(sub: Subcommand):
    try:
        return importlib.import_module(sub.module)
    except ModuleNotFoundError as exc:
        if exc.name and sub.module.startswith(exc.name):
            return None
        raise


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; only `command`'s module is imported, so other subcommands cost nothing."""
    parser = argparse.ArgumentParser(
        prog="loraplane",
        description="Multi-LoRA LLM serving: control plane, inference workers and an OpenAI gateway.",
    )
    observability.add_logging_arguments(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for sub in SUBCOMMANDS:
        sub_parser = subparsers.add_parser(sub.name, help=sub.help, description=sub.help)
        module = _load(sub) if sub.name == command else None
        if module is not None:
            module.add_arguments(sub_parser)
        if sub.name in SERVING:
            observability.add_arguments(sub_parser)
        sub_parser.set_defaults(_subcommand=sub, _module=module)
    return parser


def _command_in(argv: list[str]) -> str | None:
    names = {sub.name for sub in SUBCOMMANDS}
    return next((arg for arg in argv if arg in names), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_command_in(argv)).parse_args(argv)
    try:
        config = observability.config_from_args(args)
        observability.configure_logging(args.log_level, args.log_format)
    except ValueError as exc:
        print(f"loraplane: {exc}", file=sys.stderr)
        return 2
    observability.export_to_children(args, config)
    if args._module is None:
        print(f"loraplane {args._subcommand.name}: not built yet in this version.", file=sys.stderr)
        return 2
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
