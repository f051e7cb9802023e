"""`loraplane workers list` (exit codes in loraplane.control_plane.admin_cli)."""

from __future__ import annotations

import argparse

from loraplane.control_plane.admin_cli import client


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list inference workers")
    listing.add_argument("--base-model", default="", help="only workers of this base model")
    listing.add_argument("--all", action="store_true", help="include workers that are down")
    client.add_common_arguments(listing)


def run(args: argparse.Namespace) -> int:
    from loraplane.registry.v1 import registry_pb2 as reg
    from loraplane.registry.v1 import registry_pb2_grpc

    def fetch(stub, metadata):
        request = reg.ListWorkersRequest(base_model_name=args.base_model, include_down=args.all)
        return stub.ListWorkers(request, metadata=metadata, timeout=args.timeout).workers

    code, workers = client.call(args, registry_pb2_grpc.AdapterRegistryStub, fetch)
    if code != client.EXIT_OK:
        return code
    if args.json:
        client.print_json([client.to_dict(w) for w in workers])
        return code
    rows = [
        [
            w.worker_id,
            client.enum_label(reg.WorkerState, w.state, "WORKER_STATE_"),
            w.base_model_name,
            w.endpoint,
            f"{w.num_running}/{w.num_waiting}",
            f"{w.kv_usage:.0%}",
            ", ".join(a.name for a in w.adapters),
        ]
        for w in workers
    ]
    columns = ["id", "state", "base model", "endpoint", "running/waiting", "kv", "adapters"]
    client.print_table("workers", columns, rows, args.output)
    return code
