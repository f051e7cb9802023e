"""Build hook (all other metadata lives in pyproject.toml): the wheel carries the .proto contracts next
to the modules generated from them (`loraplane/registry/v1/registry.proto` beside `registry_pb2.py`), as
grpcio-health-checking ships health.proto, so clients in other languages and tools such as grpcurl can
start from an installed package. The sources stay in protos/, the one place they are edited."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PROTOS = Path(__file__).resolve().parent / "protos"


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        super().run()
        for proto in sorted(PROTOS.rglob("*.proto")):
            target = Path(self.build_lib) / proto.relative_to(PROTOS)
            self.mkpath(str(target.parent))
            self.copy_file(str(proto), str(target))


setup(cmdclass={"build_py": BuildPyWithProtos})
