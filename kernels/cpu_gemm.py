"""Weight-streaming AVX-512 fp32 GEMM for CPU decode: a few rows times a weight packed into panels.

A decode step multiplies a handful of rows by every weight matrix, so its time is how fast the weights
stream from memory. This kernel packs an fp32 weight once into column panels `[ceil(N/16), K, 16]`: a
panel is one contiguous stream whose 64-byte lines each hold one k's 16 outputs, read in full. It keeps
all rows' accumulators in zmm registers (one per row), folds the row broadcasts into the FMAs and
prefetches 16 KB ahead into L2. Measured on SmolLM2-135M's 120 layer weights at batch 8, one thread:
35.9 ms against 43.8 ms for oneDNN's packed inner product (a plain AVX-512 sum over the same bytes:
26-30 ms); the tied LM head 5-7 ms against 9 ms. fp32 accumulation in k order, so results differ from
`F.linear` by rounding only (~1e-6 relative).

The C++ lives in `kernels/csrc/cpu_gemm.cpp`, compiled with g++ (`-O3 -mavx512f -mfma -fopenmp`) by
`loraplane.kernels.native.load_extension` once per environment (cached under `$LORAPLANE_CACHE/kernels`)
and only on CPUs with AVX-512; where it is missing or fails to build, `panel_kernels()` returns None and
callers (the engine's `inference_worker/layers/cpu_layout.py`) keep oneDNN.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from loraplane.kernels.cpu_ops import huge_empty
from loraplane.kernels.dispatch import batch_invariant
from loraplane.kernels.native import Extension, load_extension

PANEL_WIDTH = 16  # fp32 lanes of a zmm register: one 64-byte line per k
MAX_ROWS = 64  # more rows (prefill) run F.linear on the dense weight: MKL's blocked GEMM wins there
CPU_GEMM = Extension("loraplane_cpu_gemm", "cpu_gemm.cpp", flags=("-fopenmp",), ldflags=("-fopenmp",))


@functools.cache
def panel_kernels():
    """The compiled extension (built once per environment), or None without AVX-512 or a working g++."""
    return load_extension(CPU_GEMM, "fp32 decode GEMMs use oneDNN")


@dataclass(frozen=True)
class PanelWeight:
    """An fp32 weight packed for `panel_linear`, beside the dense weight it was packed from.

    Shape: panels [ceil(N/16), K, 16] (zero-padded past N); weight [N, K] (the module's, not a copy).
    """

    panels: torch.Tensor
    weight: torch.Tensor

    @property
    def dtype(self) -> torch.dtype:
        return self.weight.dtype


def pack_panels(weight: torch.Tensor, out: torch.Tensor | None = None) -> PanelWeight:
    """Shape: weight [N, K] fp32 -> PanelWeight with panels[g, k, j] = weight[16 g + j, k] (written into
    `out` [ceil(N/16), K, 16] when given)."""
    num_out, num_in = weight.shape
    num_panels = -(-num_out // PANEL_WIDTH)
    padded = F.pad(weight.detach(), (0, 0, 0, num_panels * PANEL_WIDTH - num_out))
    panels = padded.view(num_panels, PANEL_WIDTH, num_in).transpose(1, 2)
    if out is None:
        return PanelWeight(panels=panels.contiguous(), weight=weight)
    return PanelWeight(panels=out.copy_(panels), weight=weight)


def pack_panels_contiguous(weights: list[torch.Tensor]) -> list[PanelWeight]:
    """`pack_panels` of each weight, laid end to end in one buffer in the given order (the forward's):
    the kernel's prefetch then runs on from one matrix into the next, as one stream (~5% faster on
    SmolLM2's layer chain than separate allocations). The buffer sits on transparent huge pages
    (`cpu_ops.huge_empty`): streaming ~0.5 GB through 4 KiB pages costs TLB misses, ~2.4 ms of a ~57 ms
    SmolLM2 decode step at batch 8."""
    shapes = [(-(-w.shape[0] // PANEL_WIDTH), w.shape[1], PANEL_WIDTH) for w in weights]
    sizes = [math.prod(shape) for shape in shapes]
    arena = huge_empty(sum(sizes))
    views = [chunk.view(shape) for chunk, shape in zip(arena.split(sizes), shapes, strict=True)]
    return [pack_panels(w, out=view) for w, view in zip(weights, views, strict=True)]


def panel_linear(x: torch.Tensor, packed: PanelWeight, bias: torch.Tensor | None) -> torch.Tensor:
    """y = x W^T (+ b) with W packed by `pack_panels`; more than `MAX_ROWS` rows run `F.linear` on the
    dense weight (prefill is compute-bound, where MKL's blocked GEMM wins), except in batch-invariant
    mode: each row's sum runs in k order in the panel kernel whatever the row count, where MKL picks
    its kernel (and sum order) by the row count.

    Shape: x [T, K] fp32, bias [N] or None -> [T, N].
    """
    if x.shape[0] == 0 or (x.shape[0] > MAX_ROWS and not batch_invariant()):
        return F.linear(x, packed.weight, bias)
    return panel_kernels().panel_linear(x, packed.panels, bias, packed.weight.shape[0])
