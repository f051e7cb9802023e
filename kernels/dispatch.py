"""Backend choice for the kernel ops: Triton or the PyTorch reference.

Rule (decided per call, so a process-wide ``TRITON_INTERPRET`` never slows the CPU engine path):
- CUDA tensors always take the Triton kernels.
- CPU tensors take the PyTorch references, unless ``TRITON_INTERPRET=1`` is set *and* the caller
  is inside :func:`interpret_on_cpu` (the kernel tests enable it through an autouse fixture); then
  the real Triton kernels run under Triton's CPU interpreter.

The Triton kernel modules are imported lazily on the first Triton call: ``triton.jit`` decides at
decoration time whether it builds an interpreted function, so importing them late lets a test
conftest set ``TRITON_INTERPRET=1`` after other packages already imported ``loraplane.kernels``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

import torch

_INTERPRET_ON_CPU: contextvars.ContextVar[bool] = contextvars.ContextVar("interpret_on_cpu", default=False)


def interpreter_enabled() -> bool:
    """Whether Triton's CPU interpreter is switched on for this process (read at call time)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@contextlib.contextmanager
def interpret_on_cpu() -> Iterator[None]:
    """Within this block, CPU tensors run the Triton kernels under the interpreter (tests only)."""
    token = _INTERPRET_ON_CPU.set(True)
    try:
        yield
    finally:
        _INTERPRET_ON_CPU.reset(token)


def use_triton(tensor: torch.Tensor) -> bool:
    """True when the op on ``tensor`` should launch the Triton kernel rather than the reference."""
    if tensor.is_cuda:
        return True
    # the context variable first: it is cheap, and false on every engine call (no environment lookup)
    return tensor.device.type == "cpu" and _INTERPRET_ON_CPU.get() and interpreter_enabled()


def dot_precision(dtype: torch.dtype) -> str:
    """Input precision of the Triton kernels' ``tl.dot`` for operands of ``dtype``: fp32 multiplies
    exactly ("ieee"), not in TF32 (which drops 13 mantissa bits); half types are exact either way."""
    return "ieee" if dtype == torch.float32 else "tf32"
