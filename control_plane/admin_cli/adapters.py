"""`loraplane adapters add|list|show|rm` (exit codes in loraplane.control_plane.admin_cli)."""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

from loraplane.control_plane.admin_cli import client


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="register an adapter (or replace one with --replace)")
    add.add_argument("name", metavar="NAME")
    add.add_argument("source", metavar="SOURCE", help="adapter directory (under an adapter root) or hub id")
    add.add_argument("--base-model", default="", help="base model the adapter was trained for")
    add.add_argument("--replace", action="store_true", help="roll out new files under an existing name")
    add.add_argument("--hub", action="store_true", help="SOURCE is a hub id (owner/name)")
    add.add_argument("--revision", default="", help="hub revision (branch, tag or commit)")
    add.add_argument("--rollout-timeout", type=float, default=0.0, help="seconds to wait for workers")
    add.add_argument(
        "--request-id",
        default="",
        help="idempotency key of this create (default: a new UUID); the add is retried with it while the "
        "control plane is unavailable, and the same id again returns the adapter it created",
    )
    listing = actions.add_parser("list", help="list adapters")
    listing.add_argument("--base-model", default="", help="only adapters of this base model")
    show = actions.add_parser("show", help="show one adapter and its residency")
    show.add_argument("name", metavar="NAME")
    rm = actions.add_parser("rm", help="delete an adapter and unload it everywhere")
    rm.add_argument("name", metavar="NAME")
    rm.add_argument("--allow-missing", action="store_true", help="succeed when the name does not exist")
    for sub in (add, listing, show, rm):
        client.add_common_arguments(sub)


def run(args: argparse.Namespace) -> int:
    from loraplane.registry.v1 import registry_pb2 as reg
    from loraplane.registry.v1 import registry_pb2_grpc

    action = {"add": _add, "list": _list, "show": _show, "rm": _rm}[args.action]
    code, output = client.call(
        args, registry_pb2_grpc.AdapterRegistryStub, lambda stub, md: action(args, stub, md, reg)
    )
    if code == client.EXIT_OK:
        output()
    return code


def _add(args, stub, metadata, reg):
    if args.hub:
        source = reg.AdapterSource(hub_id=args.source, revision=args.revision)
    else:
        path = (
            os.path.abspath(os.path.expanduser(args.source)) if os.path.exists(args.source) else args.source
        )
        source = reg.AdapterSource(path=path)
    request = reg.CreateAdapterRequest(
        adapter=reg.Adapter(name=args.name, source=source, base_model_name=args.base_model),
        replace=args.replace,
        rollout_timeout_ms=int(args.rollout_timeout * 1000),
        request_id=args.request_id or str(uuid.uuid4()),
    )
    response = _create_with_retries(stub, request, metadata, args.timeout)
    if args.json:
        return lambda: client.print_json(client.to_dict(response))
    return lambda: (_print_adapters([response.adapter], reg, args.output), print(response.message))


CREATE_ATTEMPTS = 4


def _create_with_retries(stub, request, metadata, timeout: float):
    """CreateAdapter, retried on UNAVAILABLE (the call may or may not have been applied): the request
    carries one request id throughout, so a retry of an applied create returns that create's record."""
    import grpc

    deadline = time.monotonic() + timeout
    for attempt in range(CREATE_ATTEMPTS):
        try:
            return stub.CreateAdapter(request, metadata=metadata, timeout=max(deadline - time.monotonic(), 1))
        except grpc.RpcError as exc:
            delay = 0.5 * 2**attempt
            last = attempt == CREATE_ATTEMPTS - 1 or time.monotonic() + delay >= deadline
            if exc.code() != grpc.StatusCode.UNAVAILABLE or last:
                raise
            print(
                f"control plane unavailable ({exc.details()}); retrying with the same request id "
                f"{request.request_id} in {delay:g} s",
                file=sys.stderr,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover - the last attempt returns or raises


def _list(args, stub, metadata, reg):
    adapters, token = [], ""
    while True:
        page = stub.ListAdapters(
            reg.ListAdaptersRequest(page_size=1000, page_token=token, base_model_name=args.base_model),
            metadata=metadata,
            timeout=args.timeout,
        )
        adapters.extend(page.adapters)
        token = page.next_page_token
        if not token:
            break
    if args.json:
        return lambda: client.print_json([client.to_dict(a) for a in adapters])
    return lambda: _print_adapters(adapters, reg, args.output)


def _show(args, stub, metadata, reg):
    adapter = stub.GetAdapter(
        reg.GetAdapterRequest(name=args.name), metadata=metadata, timeout=args.timeout
    ).adapter
    if args.json:
        return lambda: client.print_json(client.to_dict(adapter))

    def show() -> None:
        _print_adapters([adapter], reg, args.output)
        rows = [
            [
                r.worker_id,
                _state_label(r.state),
                r.version[:12],
                r.error,
            ]
            for r in adapter.residency
        ]
        columns = ["worker", "state", "version", "error"]
        client.print_table(f"residency of {adapter.name}", columns, rows, args.output)

    return show


def _rm(args, stub, metadata, reg):
    request = reg.DeleteAdapterRequest(name=args.name, allow_missing=args.allow_missing)
    response = stub.DeleteAdapter(request, metadata=metadata, timeout=args.timeout)
    if args.json:
        return lambda: client.print_json(client.to_dict(response))
    return lambda: print(f"deleted {args.name}; unloaded on {len(response.unloaded_workers)} workers")


# Residency states whose adapter serves without a disk read ("loaded" in the adapters table).
_SERVABLE = ("device", "host")


def _state_label(state: int) -> str:
    """The display name of a loraplane.common.v1.ResidencyState ("device", "host", "disk", ...)."""
    from loraplane.common.v1 import residency_pb2

    return client.enum_label(residency_pb2.ResidencyState, state, "RESIDENCY_STATE_")


def _print_adapters(adapters, reg, output: str) -> None:
    rows = []
    for a in adapters:
        ready = sum(_state_label(r.state) in _SERVABLE for r in a.residency)
        source = a.source.path or a.source.hub_id
        rows.append(
            [
                a.name,
                a.base_model_name or "*",
                a.version[:12],
                str(a.rank),
                source,
                f"{ready}/{len(a.residency)}",
            ]
        )
    columns = ["name", "base model", "version", "rank", "source", "loaded"]
    client.print_table("adapters", columns, rows, output)
