"""Backend choice for the kernel ops: Triton or the PyTorch reference.

Rule (decided per call, so a process-wide ``TRITON_INTERPRET`` never slows the CPU engine path):
- CUDA tensors always take the Triton kernels.
- CPU tensors take the PyTorch references, unless ``TRITON_INTERPRET=1`` is set *and* the caller
  is inside :func:`interpret_on_cpu` (the kernel tests enable it through an autouse fixture); then
  the real Triton kernels run under Triton's CPU interpreter.

Batch-invariant mode (:func:`batch_invariant_mode`, vLLM's ``VLLM_BATCH_INVARIANT``): the ops pick tile
shapes, split counts and paths that do not depend on how many rows the batch has, so a row's result
never depends on the rows beside it (the engine enters it for a whole step when configured so).

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
_BATCH_INVARIANT: contextvars.ContextVar[bool] = contextvars.ContextVar("batch_invariant", default=False)


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


@contextlib.contextmanager
def batch_invariant_mode(enabled: bool = True) -> Iterator[None]:
    """Within this block (this thread or task), ops run their batch-invariant forms when ``enabled``."""
    token = _BATCH_INVARIANT.set(enabled)
    try:
        yield
    finally:
        _BATCH_INVARIANT.reset(token)


def batch_invariant() -> bool:
    """Whether the calling op must give each row a result independent of the batch's other rows."""
    return _BATCH_INVARIANT.get()


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
