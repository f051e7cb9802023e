"""Kernel tests run the real Triton kernels: on the GPU when there is one, else under the interpreter.

``TRITON_INTERPRET=1`` must be in the environment before any Triton kernel is decorated. The kernel
modules (kernels.triton_*) are imported lazily on their first call, so setting it here at import time
is early enough even when other test packages imported ``loraplane.kernels`` first. The flag is process-wide
but harmless elsewhere: CPU tensors still take the PyTorch references unless a test is inside
``kernels.dispatch.interpret_on_cpu()``, which the autouse fixture below enters for this package only.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

from loraplane.kernels.dispatch import interpret_on_cpu  # noqa: E402


@pytest.fixture(autouse=True)
def _triton_on_cpu():
    with interpret_on_cpu():
        yield
