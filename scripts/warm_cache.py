"""Fill loraplane's cache ahead of the first start (container images run it at build time).

Builds the C++ CPU ops (`loraplane.kernels.cpu_ops`, `loraplane.kernels.cpu_gemm`) into
`$LORAPLANE_CACHE/kernels` and converts the demo model into `$LORAPLANE_CACHE/models`, so a container
serves within seconds of starting instead of compiling and converting first. On a CPU without
AVX-512 the ops are not built (the PyTorch references serve there); a host that has it builds them at
its first start, with the compiler the image keeps. Exits non-zero if the demo model cannot be prepared.

python -P scripts/warm_cache.py
"""

from __future__ import annotations

import logging
import sys

from loraplane.cache import cache_root
from loraplane.inference_worker.demo import demo_model_path
from loraplane.kernels.cpu_gemm import panel_kernels
from loraplane.kernels.cpu_ops import native_ops

log = logging.getLogger("warm_cache")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.info("cache root: %s", cache_root())
    for name, load in (("CPU ops", native_ops), ("CPU GEMM", panel_kernels)):
        log.info("%s: %s", name, "built" if load() is not None else "not built on this CPU")
    log.info("demo model: %s", demo_model_path())
    return 0


if __name__ == "__main__":
    sys.exit(main())
