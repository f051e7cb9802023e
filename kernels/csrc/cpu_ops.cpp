// One-pass AVX-512 fp32 CPU ops and a huge-page allocator: see loraplane.kernels.cpu_ops (kernels/cpu_ops.py).
#include <torch/extension.h>
#include <immintrin.h>
#include <sys/mman.h>
#include <cmath>

namespace {
constexpr int64_t kHuge = int64_t(2) << 20;

// exp(x) to ~1 ulp: x = n ln2 + r, |r| <= ln2 / 2, a degree-6 polynomial (Cephes expf) scaled by 2^n.
inline __m512 exp_ps(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(89.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(y, n);
}

inline __mmask16 tail_mask(int64_t left) {
  return static_cast<__mmask16>((1u << std::min<int64_t>(16, left)) - 1u);
}

void check_rows(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.scalar_type() == torch::kFloat && t.stride(1) == 1 && !t.is_cuda(),
              name, " must be a 2-D CPU fp32 tensor with contiguous rows");
}
}  // namespace

torch::Tensor huge_empty(int64_t numel) {
  TORCH_CHECK(numel > 0, "numel must be positive");
  const int64_t bytes = (numel * int64_t(sizeof(float)) + kHuge - 1) / kHuge * kHuge;
  const size_t mapped = static_cast<size_t>(bytes + kHuge);  // room to align the start to 2 MiB
  void* base = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  TORCH_CHECK(base != MAP_FAILED, "mmap of ", mapped, " bytes failed");
  const uintptr_t start = (reinterpret_cast<uintptr_t>(base) + kHuge - 1) & ~uintptr_t(kHuge - 1);
  madvise(reinterpret_cast<void*>(start), static_cast<size_t>(bytes), MADV_HUGEPAGE);
  return torch::from_blob(reinterpret_cast<void*>(start), {numel}, [base, mapped](void*) {
    munmap(base, mapped);
  }, torch::TensorOptions().dtype(torch::kFloat));
}

std::vector<torch::Tensor> add_rms_norm(const torch::Tensor& x, const c10::optional<torch::Tensor>& residual,
                                        const torch::Tensor& weight, double eps) {
  check_rows(x, "x");
  const int64_t T = x.size(0), H = x.size(1);
  TORCH_CHECK(weight.is_contiguous() && weight.numel() == H && weight.scalar_type() == torch::kFloat,
              "weight must be [hidden] fp32");
  if (residual.has_value()) {
    check_rows(*residual, "residual");
    TORCH_CHECK(residual->size(0) == T && residual->size(1) == H, "residual must match x");
  }
  torch::Tensor normed = torch::empty({T, H}, x.options());
  torch::Tensor res = residual.has_value() ? torch::empty({T, H}, x.options()) : x;
  const float* wp = weight.data_ptr<float>();
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = x.data_ptr<float>() + t * x.stride(0);
    float* rr = res.data_ptr<float>() + t * res.stride(0);
    if (residual.has_value()) {
      const float* pr = residual->data_ptr<float>() + t * residual->stride(0);
      for (int64_t i = 0; i < H; i += 16) {
        const __mmask16 m = tail_mask(H - i);
        _mm512_mask_storeu_ps(rr + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, xr + i),
                                                       _mm512_maskz_loadu_ps(m, pr + i)));
      }
    }
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < H; i += 16) {
      const __m512 v = _mm512_maskz_loadu_ps(tail_mask(H - i), rr + i);
      acc = _mm512_fmadd_ps(v, v, acc);
    }
    const float rstd = 1.0f / std::sqrt(_mm512_reduce_add_ps(acc) / static_cast<float>(H) +
                                        static_cast<float>(eps));
    const __m512 s = _mm512_set1_ps(rstd);
    float* out = normed.data_ptr<float>() + t * H;
    for (int64_t i = 0; i < H; i += 16) {
      const __mmask16 m = tail_mask(H - i);
      const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, rr + i), s);
      _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, wp + i)));
    }
  }
  return {normed, res};
}

torch::Tensor silu_and_mul(const torch::Tensor& x) {
  check_rows(x, "x");
  const int64_t T = x.size(0), I = x.size(1) / 2;
  TORCH_CHECK(x.size(1) == 2 * I, "x must have an even last dimension");
  torch::Tensor out = torch::empty({T, I}, x.options());
  for (int64_t t = 0; t < T; ++t) {
    const float* g = x.data_ptr<float>() + t * x.stride(0);
    const float* u = g + I;
    float* o = out.data_ptr<float>() + t * I;
    for (int64_t i = 0; i < I; i += 16) {
      const __mmask16 m = tail_mask(I - i);
      const __m512 a = _mm512_maskz_loadu_ps(m, g + i);
      const __m512 e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), a));
      const __m512 silu = _mm512_div_ps(a, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
      _mm512_mask_storeu_ps(o + i, m, _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(m, u + i)));
    }
  }
  return out;
}

// In place: per head, x = x * cos + roll(x, D / 2) * sin (rounded as three ops, as the reference).
void rotary_embedding(torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, int64_t D) {
  check_rows(x, "x");
  const int64_t T = x.size(0), half = D / 2, heads = x.size(1) / D;
  TORCH_CHECK(D % 32 == 0 && heads * D == x.size(1), "head_dim must divide the row and be a multiple of 32");
  TORCH_CHECK(cos.is_contiguous() && sin.is_contiguous() && cos.numel() == T * D &&
              sin.numel() == T * D && cos.scalar_type() == torch::kFloat &&
              sin.scalar_type() == torch::kFloat, "cos, sin must be [T, 1, D] fp32");
  for (int64_t t = 0; t < T; ++t) {
    const float* c = cos.data_ptr<float>() + t * D;
    const float* s = sin.data_ptr<float>() + t * D;
    for (int64_t h = 0; h < heads; ++h) {
      float* xh = x.data_ptr<float>() + t * x.stride(0) + h * D;
      for (int64_t i = 0; i < half; i += 16) {
        const __m512 a = _mm512_loadu_ps(xh + i), b = _mm512_loadu_ps(xh + half + i);
        const __m512 lo = _mm512_add_ps(_mm512_mul_ps(a, _mm512_loadu_ps(c + i)),
                                        _mm512_mul_ps(b, _mm512_loadu_ps(s + i)));
        const __m512 hi = _mm512_add_ps(_mm512_mul_ps(b, _mm512_loadu_ps(c + half + i)),
                                        _mm512_mul_ps(a, _mm512_loadu_ps(s + half + i)));
        _mm512_storeu_ps(xh + i, lo);
        _mm512_storeu_ps(xh + half + i, hi);
      }
    }
  }
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("huge_empty", torch::wrap_pybind_function(huge_empty), "huge_empty");
  m.def("add_rms_norm", torch::wrap_pybind_function(add_rms_norm), "add_rms_norm");
  m.def("silu_and_mul", torch::wrap_pybind_function(silu_and_mul), "silu_and_mul");
  m.def("rotary_embedding", torch::wrap_pybind_function(rotary_embedding), "rotary_embedding");
}
