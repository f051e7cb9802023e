"""The gRPC contracts: generated code is fresh, every message round-trips, other languages load them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import google.api.annotations_pb2
import pytest
from google.protobuf import descriptor as _descriptor
from google.protobuf import message_factory, timestamp_pb2

from loraplane.common.v1 import residency_pb2
from loraplane.inference.v1 import inference_pb2
from loraplane.registry.v1 import registry_pb2
from loraplane.worker.v1 import worker_pb2

ROOT = Path(__file__).resolve().parents[2]
MODULES = (residency_pb2, registry_pb2, worker_pb2, inference_pb2)
SERVICES = {
    "loraplane/registry/v1/registry.proto": ["loraplane.registry.v1.AdapterRegistry"],
    "loraplane/worker/v1/worker.proto": ["loraplane.worker.v1.WorkerControl"],
    "loraplane/inference/v1/inference.proto": ["loraplane.inference.v1.Inference"],
}
FD = _descriptor.FieldDescriptor


def all_message_types():
    def walk(desc):
        yield desc
        for nested in desc.nested_types:
            yield from walk(nested)

    for module in MODULES:
        for desc in module.DESCRIPTOR.message_types_by_name.values():
            yield from walk(desc)


def scalar_value(field: _descriptor.FieldDescriptor, seed: int):
    if field.type == FD.TYPE_STRING:
        return f"{field.name}-{seed}-é"
    if field.type == FD.TYPE_BYTES:
        return bytes([seed % 256, 0, 255])
    if field.type == FD.TYPE_BOOL:
        return True
    if field.type in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        return 0.5 + seed
    if field.type == FD.TYPE_ENUM:
        return field.enum_type.values[-1].number
    return seed + 1


def fill(message, depth: int = 0) -> None:
    """Set every field; for a oneof the last member set wins. Recursion is bounded."""
    for i, field in enumerate(message.DESCRIPTOR.fields):
        if field.type == FD.TYPE_MESSAGE:
            if depth > 3:
                continue
            if field.message_type.full_name == "google.protobuf.Timestamp":
                stamp = timestamp_pb2.Timestamp(seconds=1_700_000_000 + i, nanos=5)
                target = getattr(message, field.name)
                (target.add() if field.is_repeated else target).CopyFrom(stamp)
                continue
            sub = getattr(message, field.name).add() if field.is_repeated else getattr(message, field.name)
            fill(sub, depth + 1)
            if not field.is_repeated:
                sub.SetInParent()
        elif field.is_repeated:
            getattr(message, field.name).extend([scalar_value(field, i), scalar_value(field, i + 1)])
        else:
            setattr(message, field.name, scalar_value(field, i))


@pytest.mark.parametrize("desc", list(all_message_types()), ids=lambda d: d.full_name)
def test_every_message_round_trips(desc):
    message_class = message_factory.GetMessageClass(desc)
    message = message_class()
    fill(message)
    data = message.SerializeToString()
    parsed = message_class.FromString(data)
    assert parsed == message
    if desc.fields:
        assert data, f"{desc.full_name} serialized to nothing although its fields were set"


def test_enums_start_at_unspecified():
    """Buf style: enum values share a prefix and start at *_UNSPECIFIED = 0."""
    for module in MODULES:
        for enum in module.DESCRIPTOR.enum_types_by_name.values():
            zero = enum.values_by_number[0]
            assert zero.name.endswith("_UNSPECIFIED"), enum.full_name
            for value in enum.values:
                assert value.name.startswith(zero.name.removesuffix("UNSPECIFIED")), value.name


def test_services_have_a_request_and_response_message_per_rpc():
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                assert method.input_type.name == f"{method.name}Request", method.full_name
                assert method.output_type.name == f"{method.name}Response", method.full_name


def test_every_proto_element_has_a_comment():
    for proto in sorted((ROOT / "protos").rglob("*.proto")):
        lines = proto.read_text().splitlines()
        for n, line in enumerate(lines):
            stripped = line.strip()
            declares = stripped.startswith(("message ", "enum ", "service ", "rpc ", "oneof "))
            is_field = (
                "=" in stripped
                and stripped.endswith(";")
                and not stripped.startswith(("option", "syntax", "package", "import", "//"))
            )
            if declares or is_field:
                assert lines[n - 1].strip().startswith("//"), f"{proto.name}:{n + 1} lacks a comment: {line}"


def test_generated_code_is_fresh():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_sampling_fields_distinguish_unset_from_zero():
    params = inference_pb2.SamplingParams(temperature=0.0)
    assert params.HasField("temperature")
    assert not params.HasField("top_p")


def test_node_grpc_client_loads_every_proto():
    node_dir = ROOT / "tests" / "node"
    if not (node_dir / "node_modules" / "@grpc" / "proto-loader").exists():
        if os.environ.get("CI") or shutil.which("npm") is None:
            pytest.fail("tests/node/node_modules is missing: run `npm ci --prefix tests/node`")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=node_dir, check=True)
    googleapis = Path(google.api.annotations_pb2.__file__).resolve().parents[2]
    result = subprocess.run(
        ["node", "load_protos.js", str(ROOT / "protos"), str(googleapis), *SERVICES],
        cwd=node_dir,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout) == SERVICES
