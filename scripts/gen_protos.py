"""Generate the Python gRPC modules and Envoy's descriptor set from protos/.

Writes `loraplane/<area>/v1/<area>_pb2.py`, `_pb2.pyi` and `_pb2_grpc.py` (so the proto package
`loraplane.<area>.v1` is also the Python import path) and `gateway/envoy/loraplane_api.pb` (a
descriptor set with imports, for Envoy's gRPC-JSON transcoder), and the same descriptor set for the
Kubernetes edge (`deploy/kubernetes/base/edge/`).

    python scripts/gen_protos.py           # regenerate in place
    python scripts/gen_protos.py --check   # exit 1 when the committed output is stale
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import google.api.annotations_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"
DESCRIPTOR_SET = Path("gateway/envoy/loraplane_api.pb")
# The Kubernetes edge's copy (kustomize reads only files under its own folder), kept identical here.
KUBERNETES_DESCRIPTOR_SET = Path("deploy/kubernetes/base/edge/loraplane_api.pb")


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def googleapis_include() -> Path:
    # googleapis-common-protos ships google/api/*.proto next to its generated modules.
    return Path(google.api.annotations_pb2.__file__).resolve().parents[2]


def grpc_tools_include() -> Path:
    return Path(protoc.__file__).resolve().parent / "_proto"


def run_protoc(out: Path) -> None:
    rel = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    includes = [f"-I{PROTO_ROOT}", f"-I{googleapis_include()}", f"-I{grpc_tools_include()}"]
    code_args = ["protoc", *includes, f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}"]
    if protoc.main([*code_args, *rel]) != 0:
        sys.exit("protoc failed to generate Python code")
    (out / DESCRIPTOR_SET).parent.mkdir(parents=True, exist_ok=True)
    desc_args = ["protoc", *includes, "--include_imports", "--include_source_info"]
    desc_args.append(f"--descriptor_set_out={out / DESCRIPTOR_SET}")
    if protoc.main([*desc_args, *rel, "google/rpc/status.proto"]) != 0:
        sys.exit("protoc failed to write the descriptor set")
    for package_dir in {p.parent for p in out.rglob("*_pb2.py")}:
        for d in (package_dir, package_dir.parent):
            (d / "__init__.py").touch()


def generated_files(out: Path) -> list[Path]:
    patterns = ["loraplane/*/v1/*_pb2*.py*", "loraplane/*/__init__.py", "loraplane/*/v1/__init__.py"]
    files = {p.relative_to(out) for pattern in patterns for p in out.glob(pattern)}
    return sorted(files | {DESCRIPTOR_SET, KUBERNETES_DESCRIPTOR_SET})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed output is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        run_protoc(out)
        (out / KUBERNETES_DESCRIPTOR_SET).parent.mkdir(parents=True)
        shutil.copyfile(out / DESCRIPTOR_SET, out / KUBERNETES_DESCRIPTOR_SET)
        stale = []
        for rel in generated_files(out):
            if not (ROOT / rel).exists() or not filecmp.cmp(out / rel, ROOT / rel, shallow=False):
                stale.append(rel)
                if not args.check:
                    (ROOT / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(out / rel, ROOT / rel)
    if args.check and stale:
        print("stale generated files (run `python scripts/gen_protos.py`):", *map(str, stale), sep="\n  ")
        return 1
    verb = "checked" if args.check else "generated"
    print(f"{verb} {len(proto_files())} protos; {len(stale)} files changed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
