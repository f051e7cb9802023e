"""Shared plumbing of the admin CLI: common flags, the channel, error -> exit code, output."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loraplane.tls import add_tls_arguments

OUTPUTS = ("table", "tsv", "json")
EXIT_OK = 0
EXIT_SERVER_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
DEFAULT_CONTROL_PLANE = "127.0.0.1:50051"
CONTROL_PLANE_ENV = "LORAPLANE_CONTROL_PLANE"
ADMIN_TOKEN_ENV = "LORAPLANE_ADMIN_TOKEN"


class _RefuseSecretArgument(argparse.Action):
    """Refuses a secret passed as an argument (every local user sees arguments through `ps`)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(
            f"{option_string} is not accepted: a token on the command line is visible to every local user; "
            f"set {ADMIN_TOKEN_ENV} or pass --admin-token-file"
        )


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--control-plane",
        default=None,
        metavar="HOST:PORT",
        help=f"control plane address (env {CONTROL_PLANE_ENV}, default {DEFAULT_CONTROL_PLANE})",
    )
    parser.add_argument(
        "--admin-token-file",
        default=None,
        metavar="PATH",
        help=f"file holding the admin token (default: env {ADMIN_TOKEN_ENV}); never pass a secret as an "
        "argument, which `ps` shows",
    )
    parser.add_argument("--admin-token", nargs="?", action=_RefuseSecretArgument, help=argparse.SUPPRESS)
    add_tls_arguments(parser, "mutual TLS with the control plane (the client certificate)")
    parser.add_argument(
        "--output",
        "-o",
        choices=OUTPUTS,
        default="table",
        help="table (full values, also when piped), tsv (a header line, then one line per row) or json",
    )
    parser.add_argument("--json", action="store_true", help="same as --output json")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the answer (120)")


def target(args: argparse.Namespace) -> str:
    return args.control_plane or os.environ.get(CONTROL_PLANE_ENV) or DEFAULT_CONTROL_PLANE


def metadata(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    if args.admin_token_file is not None:
        try:
            token = Path(args.admin_token_file).read_text().strip()
        except OSError as exc:
            sys.exit(f"loraplane: cannot read --admin-token-file: {exc.strerror} ({args.admin_token_file})")
    else:
        token = os.environ.get(ADMIN_TOKEN_ENV, "")
    return (("authorization", f"Bearer {token}"),) if token else ()


def call(
    args: argparse.Namespace, stub_factory: Callable, fn: Callable[[Any, tuple], Any]
) -> tuple[int, Any]:
    """Open a channel, run `fn(stub, metadata)`, map failures to exit codes (message on stderr)."""
    import grpc

    args.json = args.json or args.output == "json"  # one switch for the commands' JSON branches

    from loraplane.grpc_options import client_options
    from loraplane.tls import channel as open_channel
    from loraplane.tls import tls_from_args

    address = target(args)
    try:
        tls = tls_from_args(args)
    except ValueError as exc:
        print(f"loraplane: {exc}", file=sys.stderr)
        return EXIT_USAGE, None
    try:
        with open_channel(address, tls, client_options()) as channel:
            grpc.channel_ready_future(channel).result(timeout=min(args.timeout, 5.0))
            return EXIT_OK, fn(stub_factory(channel), metadata(args))
    except grpc.FutureTimeoutError:
        print(
            f"error: cannot reach the control plane at {address} (is it running? see --control-plane; one "
            "serving TLS needs --tls-ca, and --tls-cert/--tls-key when it asks for a client certificate)",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE, None
    except grpc.RpcError as exc:
        code = exc.code()
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            print(f"error: control plane at {address} unavailable: {exc.details()}", file=sys.stderr)
            return EXIT_UNREACHABLE, None
        print(f"error: {code.name}: {exc.details()}", file=sys.stderr)
        return EXIT_SERVER_ERROR, None


def to_stdout(write: Callable[[], None]) -> None:
    """Run `write()`; a reader that went away (`| head`) ends the output quietly, as Unix tools do."""
    try:
        write()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def print_json(value: Any) -> None:
    to_stdout(lambda: print(json.dumps(value, indent=2, sort_keys=True)))


def to_dict(message) -> dict:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True)


def print_table(title: str, columns: list[str], rows: list[list[str]], output: str = "table") -> None:
    """Rows as a rich table, or as TSV with `output="tsv"`. Values are never cut: on a terminal the
    table fits its width by wrapping cells; piped, it is as wide as its widest values (a pipe has no
    width, and a value cut at 80 columns is one a script can no longer use)."""
    if output == "tsv":
        lines = ["\t".join(_tsv_cell(v) for v in row) for row in [columns, *rows]]
        to_stdout(lambda: print("\n".join(lines)))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(80, _natural_width(columns, rows)))
    to_stdout(lambda: console.print(table))


def _natural_width(columns: list[str], rows: list[list[str]]) -> int:
    """Characters a table needs to show every cell on one line (borders and padding included)."""
    from rich.cells import cell_len

    widths = [max(cell_len(str(v)) for v in column) for column in zip(columns, *rows, strict=True)]
    return sum(widths) + 3 * len(widths) + 1


def _tsv_cell(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def enum_label(enum_type, value: int, prefix: str) -> str:
    return enum_type.Name(value).removeprefix(prefix).lower()
