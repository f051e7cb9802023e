"""Native CPU helpers for fp32 decode: huge-page buffers and one-pass AVX-512 element-wise ops.

- `huge_empty`: an fp32 buffer 2 MiB-aligned and madvise(MADV_HUGEPAGE)'d before first touch, so the
  weight panels the decode GEMM streams sit on transparent huge pages (fewer TLB misses over ~0.5 GB)
  where the kernel runs THP in `madvise` mode.
- `add_rms_norm`, `silu_and_mul`, `rotary_embedding`: the fp32 CPU forms of the `loraplane.kernels.fused_ops`
  ops, each one pass over the rows instead of several ATen ops with their temporaries (~4 ms off a
  59 ms SmolLM2 fp32 decode step at batch 8). RoPE and the residual add round exactly as the
  references do (no FMA contraction); RMSNorm's sum of squares and SiLU's exp differ from ATen's by
  rounding only (~1e-7 relative).

`build_extension` compiles these and `loraplane.inference_worker.layers.cpu_gemm`'s kernel at first use (g++,
AVX-512, cached in torch's extension directory); without AVX-512 or a working compiler it returns None
and callers keep the references (`native_ops()`) or oneDNN.
"""

from __future__ import annotations

import functools
import logging

import torch

logger = logging.getLogger(__name__)

_SOURCE = r"""
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
"""


@functools.cache
def avx512_supported() -> bool:
    """Whether this CPU runs AVX-512F code (what torch's own kernel dispatch detected)."""
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def build_extension(name: str, source: str, functions: list[str], fallback: str, flags=(), ldflags=()):
    """Compile an AVX-512 C++ extension with g++ (once per machine), or None without AVX-512 or a
    working compiler, logging that `fallback` serves instead."""
    if not avx512_supported():
        logger.warning("CPU lacks AVX-512: %s", fallback)
        return None
    from torch.utils.cpp_extension import load_inline

    try:
        return load_inline(
            name=name,
            cpp_sources=[source],
            functions=functions,
            extra_cflags=["-O3", "-mavx512f", "-mfma", *flags],
            extra_ldflags=list(ldflags),
        )
    except Exception as exc:  # a missing or failing compiler: keep serving without it
        logger.warning("building %s failed (%s): %s", name, exc, fallback)
        return None


@functools.cache
def native_ops():
    """The compiled element-wise ops and huge-page allocator (built once per machine), or None."""
    return build_extension(
        "loraplane_cpu_ops",
        _SOURCE,
        ["huge_empty", "add_rms_norm", "silu_and_mul", "rotary_embedding"],
        "the PyTorch references run",
        flags=["-ffp-contract=off"],
    )


def huge_empty(numel: int) -> torch.Tensor:
    """An uninitialised fp32 CPU tensor of `numel` elements on transparent huge pages where the kernel
    grants them (2 MiB-aligned, MADV_HUGEPAGE before first touch); a plain `torch.empty` without the
    extension or for an empty buffer."""
    ops = native_ops()
    return torch.empty(numel, dtype=torch.float32) if ops is None or numel == 0 else ops.huge_empty(numel)
