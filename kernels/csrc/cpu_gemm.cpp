// Weight-streaming AVX-512 fp32 GEMM over column panels: see loraplane.kernels.cpu_gemm (kernels/cpu_gemm.py).
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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("panel_linear", torch::wrap_pybind_function(panel_linear), "panel_linear");
}
