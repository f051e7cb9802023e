"""Weight-streaming AVX-512 fp32 GEMM for CPU decode: a few rows times a weight packed into panels.

A decode step multiplies a handful of rows by every weight matrix, so its time is how fast the weights
stream from memory. This kernel packs an fp32 weight once into column panels `[ceil(N/16), K, 16]`: a
panel is one contiguous stream whose 64-byte lines each hold one k's 16 outputs, read in full. It keeps
all rows' accumulators in zmm registers (one per row), folds the row broadcasts into the FMAs and
prefetches 16 KB ahead into L2. Measured on SmolLM2-135M's 120 layer weights at batch 8, one thread:
35.9 ms against 43.8 ms for oneDNN's packed inner product (a plain AVX-512 sum over the same bytes:
26-30 ms); the tied LM head 5-7 ms against 9 ms. fp32 accumulation in k order, so results differ from
`F.linear` by rounding only (~1e-6 relative).

The extension is compiled at first use with g++ (`-O3 -mavx512f -mfma`, ~20 s once per machine, cached
in torch's extension directory) and only on CPUs with AVX-512; where it is missing or fails to build,
`panel_kernels()` returns None and callers keep oneDNN.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from loraplane.kernels.cpu_ops import build_extension, huge_empty

PANEL_WIDTH = 16  # fp32 lanes of a zmm register: one 64-byte line per k
MAX_ROWS = 64  # more rows (prefill) run F.linear on the dense weight: MKL's blocked GEMM wins there

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <array>
#include <utility>

namespace {
constexpr int64_t kLanes = 16;
constexpr int64_t kPrefetchFloats = 256 * kLanes;  // 16 KB ahead, into L2

// One panel and up to 16 rows: y[m, n0 + j] = sum_k x[m, k] * wp[k, j] (+ bias), xt[k * ldx + m] = x[m, k].
template <int M>
void panel_block(const float* xt, int64_t ldx, const float* wp, const float* bias, float* y, int64_t K,
                 int64_t N, int64_t n0) {
  __m512 acc[M];
  for (int m = 0; m < M; ++m) acc[m] = _mm512_setzero_ps();
#pragma GCC unroll 4
  for (int64_t k = 0; k < K; ++k) {
    const float* wk = wp + k * kLanes;
    _mm_prefetch(reinterpret_cast<const char*>(wk + kPrefetchFloats), _MM_HINT_T1);
    const __m512 w = _mm512_loadu_ps(wk);
    for (int m = 0; m < M; ++m) acc[m] = _mm512_fmadd_ps(w, _mm512_set1_ps(xt[k * ldx + m]), acc[m]);
  }
  const __mmask16 mask = static_cast<__mmask16>((1u << std::min<int64_t>(kLanes, N - n0)) - 1u);
  const __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias + n0) : _mm512_setzero_ps();
  for (int m = 0; m < M; ++m) _mm512_mask_storeu_ps(y + m * N + n0, mask, _mm512_add_ps(acc[m], b));
}

using BlockFn = void (*)(const float*, int64_t, const float*, const float*, float*, int64_t, int64_t,
                         int64_t);
template <int... Ms>
constexpr std::array<BlockFn, sizeof...(Ms)> block_table(std::integer_sequence<int, Ms...>) {
  return {&panel_block<Ms + 1>...};
}
constexpr auto kBlockFns = block_table(std::make_integer_sequence<int, kLanes>{});

// Panels [g0, g1) for all M rows: blocks of 16 rows after the first reread the panel from L2.
void panel_range(const float* xt, int64_t M, const float* panels, const float* bias, float* y, int64_t K,
                 int64_t N, int64_t g0, int64_t g1) {
  for (int64_t g = g0; g < g1; ++g) {
    for (int64_t r0 = 0; r0 < M; r0 += kLanes) {
      const int64_t rows = std::min<int64_t>(kLanes, M - r0);
      kBlockFns[rows - 1](xt + r0, M, panels + g * K * kLanes, bias, y + r0 * N, K, N, g * kLanes);
    }
  }
}
}  // namespace

torch::Tensor panel_linear(const torch::Tensor& x, const torch::Tensor& panels,
                           const c10::optional<torch::Tensor>& bias, int64_t N) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat, "x must be a 2-D fp32 tensor");
  TORCH_CHECK(panels.dim() == 3 && panels.is_contiguous() && panels.scalar_type() == torch::kFloat &&
              panels.size(1) == x.size(1) && panels.size(2) == kLanes, "panels must be [G, K, 16] fp32");
  const int64_t M = x.size(0), K = x.size(1), G = panels.size(0);
  TORCH_CHECK(M >= 1 && N > (G - 1) * kLanes && N <= G * kLanes, "bad row or column count");
  TORCH_CHECK(!bias.has_value() || (bias->is_contiguous() && bias->numel() == N &&
              bias->scalar_type() == torch::kFloat), "bias must be [N] fp32");
  const torch::Tensor xt = x.t().contiguous();
  torch::Tensor y = torch::empty({M, N}, x.options());
  const float* xp = xt.data_ptr<float>();
  const float* wp = panels.data_ptr<float>();
  const float* bp = bias.has_value() ? bias->data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / K);  // >= 4 MB of weights a task
  at::parallel_for(0, G, grain,
                   [&](int64_t g0, int64_t g1) { panel_range(xp, M, wp, bp, yp, K, N, g0, g1); });
  return y;
}
"""


@functools.cache
def panel_kernels():
    """The compiled extension (built once per machine), or None without AVX-512 or a working g++."""
    return build_extension(
        "loraplane_cpu_gemm",
        _SOURCE,
        ["panel_linear"],
        "fp32 decode GEMMs use oneDNN",
        flags=["-fopenmp"],
        ldflags=["-fopenmp"],
    )


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
    dense weight (prefill is compute-bound, where MKL's blocked GEMM wins).

    Shape: x [T, K] fp32, bias [N] or None -> [T, N].
    """
    if x.shape[0] > MAX_ROWS or x.shape[0] == 0:
        return F.linear(x, packed.weight, bias)
    return panel_kernels().panel_linear(x, packed.panels, bias, packed.weight.shape[0])
