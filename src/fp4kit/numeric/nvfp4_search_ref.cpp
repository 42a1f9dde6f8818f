// Searched NVFP4 block scales: the objective, the scalar reference (every candidate), and the
// threaded entry point that runs the SIMD search kernel (nvfp4_search_simd.cpp) on row ranges.
// Compiled with -ffp-contract=off (CMakeLists.txt) so that no multiply-add is fused here or in the
// kernel: both evaluate the objective with the same float32 operations in the same order.
#include "fp4kit/numeric/nvfp4_search.hpp"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "fp4kit/error.hpp"
#include "fp4kit/numeric/convert.hpp"
#include "fp4kit/numeric/distortion.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/numeric/nvfp4_checks.hpp"
#include "fp4kit/numeric/nvfp4_search_simd.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace fp4kit {

float nvfp4_block_objective(const float* w, uint8_t code, float s2, const float* h) {
  const float v = e4m3_to_float(code);
  const float d = v * s2;
  float dw[kNvfp4Block];
  for (size_t i = 0; i < kNvfp4Block; ++i) {
    const float a = std::fabs(w[i]);
    const float q = e2m1_to_float(float_to_e2m1(a / d));
    const float e = a - (q * v) * s2;
    dw[i] = std::signbit(w[i]) ? -e : e;
  }
  float err = 0.0f;
  if (h == nullptr) {
    for (size_t i = 0; i < kNvfp4Block; ++i) err = err + dw[i] * dw[i];
    return err;
  }
  for (size_t i = 0; i < kNvfp4Block; ++i) {
    float t = h[i * 16 + i] * dw[i];
    for (size_t k = i + 1; k < kNvfp4Block; ++k) t = t + (2.0f * h[i * 16 + k]) * dw[k];
    err = err + dw[i] * t;
  }
  return err;
}

namespace detail {

bool hessian_block_is_zero(const float* h) {
  for (size_t i = 0; i < kNvfp4Block * kNvfp4Block; ++i)
    if (h[i] != 0.0f) return false;
  return true;
}

bool search_prefers(float err, int code, float best_err, int best_code, int base) {
  if (err < best_err) return true;
  if (!(err == best_err)) return false;
  const int dc = std::abs(code - base), db = std::abs(best_code - base);
  return dc < db || (dc == db && code < best_code);
}

}  // namespace detail

namespace {

uint8_t search_block_ref(const float* w, float s2, const float* h) {
  if (h && detail::hessian_block_is_zero(h)) h = nullptr;
  float bamax = 0.0f;
  for (size_t i = 0; i < kNvfp4Block; ++i) bamax = std::fmax(bamax, std::fabs(w[i]));
  const int base = nvfp4_max_scale_code(bamax, s2);
  int best = base;
  float best_err = nvfp4_block_objective(w, static_cast<uint8_t>(base), s2, h);
  for (int c = 1; c <= 126; ++c) {
    const float e = nvfp4_block_objective(w, static_cast<uint8_t>(c), s2, h);
    if (detail::search_prefers(e, c, best_err, best, base)) best = c, best_err = e;
  }
  return static_cast<uint8_t>(best);
}

}  // namespace

namespace detail {

void nvfp4_encode_with_scales(const float* row, size_t cols, float s2, const uint8_t* scales,
                              uint8_t* packed) {
  for (size_t b = 0; b < cols / kNvfp4Block; ++b) {
    const float d = e4m3_to_float(scales[b]) * s2;
    const float* x = row + b * kNvfp4Block;
    uint8_t* out = packed + b * (kNvfp4Block / 2);
    for (size_t i = 0; i < kNvfp4Block; i += 2)
      out[i / 2] = static_cast<uint8_t>(float_to_e2m1(x[i] / d) | (float_to_e2m1(x[i + 1] / d) << 4));
  }
}

}  // namespace detail

void nvfp4_quantize_search_ref(const void* src, DType dtype, size_t rows, size_t cols, float s2,
                               const ScaleSearch& search, uint8_t* packed, uint8_t* scales) {
  detail::check_nvfp4_args(dtype, cols, s2);
  const size_t esize = dtype_size(dtype);
  const auto* base = static_cast<const unsigned char*>(src);
  const size_t nblocks = cols / kNvfp4Block;
  std::vector<float> row(cols);
  for (size_t r = 0; r < rows; ++r) {
    decode_to_f32(base + r * cols * esize, dtype, cols, row.data());
    for (size_t c = 0; c < cols; ++c)
      if (!std::isfinite(row[c])) detail::throw_nonfinite(src, dtype, rows, cols);
    for (size_t b = 0; b < nblocks; ++b)
      scales[r * nblocks + b] = search_block_ref(
          row.data() + b * kNvfp4Block, s2,
          search.hessian ? search.hessian + b * kNvfp4Block * kNvfp4Block : nullptr);
    detail::nvfp4_encode_with_scales(row.data(), cols, s2, scales + r * nblocks,
                                     packed + r * (cols / 2));
  }
}

void nvfp4_quantize_search(const void* src, DType dtype, size_t rows, size_t cols, float s2,
                           const ScaleSearch& search, uint8_t* packed, uint8_t* scales,
                           DistortionStats* error) {
  detail::check_nvfp4_args(dtype, cols, s2);
  const size_t esize = dtype_size(dtype);
  const bool simd = detail::nvfp4_search_simd_supports(dtype);
  // Tasks of whole lane groups (16 rows): a search costs ~10x a plain encode.
  const size_t grain = 16 * (1 + (size_t{1} << 13) / (cols * esize + 1));
  const auto rows_at = [&](size_t r0, size_t r1, DistortionStats* stats) {
    const auto* in = static_cast<const unsigned char*>(src) + r0 * cols * esize;
    uint8_t* p = packed + r0 * (cols / 2);
    uint8_t* s = scales + r0 * (cols / kNvfp4Block);
    if (simd) return detail::nvfp4_search_rows_simd(in, dtype, r1 - r0, cols, s2, search.hessian, p, s,
                                                    stats);
    try {
      nvfp4_quantize_search_ref(in, dtype, r1 - r0, cols, s2, search, p, s);
    } catch (const Error&) {
      return false;  // re-reported below with the row index of the whole tensor
    }
    return true;
  };
  if (error && simd) {
    if (!detail::encode_row_chunks(rows, grain, [&](size_t r0, size_t r1, DistortionStats& st) {
          return rows_at(r0, r1, &st);
        }, *error))
      detail::throw_nonfinite(src, dtype, rows, cols);
    return;
  }
  std::atomic<bool> bad{false};
  parallel_for(0, rows, grain, [&](size_t r0, size_t r1) {
    if (!rows_at(r0, r1, nullptr)) bad = true;
  });
  if (bad) detail::throw_nonfinite(src, dtype, rows, cols);
  if (error) *error = nvfp4_distortion(src, dtype, rows, cols, packed, scales, s2);
}

}  // namespace fp4kit
