"""Native CPU helpers for fp32 decode: huge-page buffers and one-pass AVX-512 element-wise ops.

- `huge_empty`: an fp32 buffer 2 MiB-aligned and madvise(MADV_HUGEPAGE)'d before first touch, so the
  weight panels the decode GEMM streams sit on transparent huge pages (fewer TLB misses over ~0.5 GB)
  where the kernel runs THP in `madvise` mode.
- `add_rms_norm`, `silu_and_mul`, `rotary_embedding`: the fp32 CPU forms of the `loraplane.kernels.fused_ops`
  ops, each one pass over the rows instead of several ATen ops with their temporaries (~4 ms off a
  59 ms SmolLM2 fp32 decode step at batch 8). RoPE and the residual add round exactly as the
  references do (no FMA contraction); RMSNorm's sum of squares and SiLU's exp differ from ATen's by
  rounding only (~1e-7 relative).

The C++ lives in `kernels/csrc/cpu_ops.cpp`; `loraplane.kernels.native.load_extension` builds it once per
environment (g++, AVX-512, cached under `$LORAPLANE_CACHE/kernels`); without AVX-512 or a working
compiler `native_ops()` is None and callers keep the references.
"""

from __future__ import annotations

import functools

import torch

from loraplane.kernels.native import Extension, load_extension

# No FMA contraction: RoPE and the residual add then round exactly as the references do.
CPU_OPS = Extension("loraplane_cpu_ops", "cpu_ops.cpp", flags=("-ffp-contract=off",))


@functools.cache
def native_ops():
    """The compiled element-wise ops and huge-page allocator (built once per environment), or None."""
    return load_extension(CPU_OPS, "the PyTorch references run")


def huge_empty(numel: int) -> torch.Tensor:
    """An uninitialised fp32 CPU tensor of `numel` elements on transparent huge pages where the kernel
    grants them (2 MiB-aligned, MADV_HUGEPAGE before first touch); a plain `torch.empty` without the
    extension or for an empty buffer."""
    ops = native_ops()
    return torch.empty(numel, dtype=torch.float32) if ops is None or numel == 0 else ops.huge_empty(numel)
