// The scalar NVFP4 reference (NVFP4-SPEC.md section 2), plus s2, amax and dequantization.
// The operation order below is the spec's, step for step: changing it changes bits.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "fp4kit/error.hpp"
#include "fp4kit/numeric/convert.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/numeric/nvfp4_row_decode.hpp"
#include "fp4kit/numeric/nvfp4_search.hpp"
#include "fp4kit/numeric/nvfp4_checks.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace fp4kit {

float nvfp4_global_scale(float amax, ScaleForm form, float e4m3_max) {
  // amax == 0 (all-zero tensor): fp4kit uses amax = 1 so s2 and 1/s2 stay finite (ModelOpt writes
  // s2 = 0 and NaN scales there; see the spec).
  if (amax == 0.0f) amax = 1.0f;
  if (e4m3_max != 448.0f) {  // headroom: the same two forms with 6 M in place of 2688
    const float den = 6.0f * e4m3_max;
    return form == ScaleForm::Cpu ? amax / den : amax * (1.0f / den);
  }
  if (form == ScaleForm::Cpu) return amax / 2688.0f;
  // GPU form: multiply by the float32 constant (float)(1/2688), itself rounded once.
  static constexpr float kR = static_cast<float>(1.0f / 2688.0f);
  return amax * kR;
}

namespace {
// max over raw |bits|: for IEEE formats non-negative values order like their bit patterns, and
// any bits >= the Inf pattern mean NaN or Inf.
template <typename U>
U abs_bits_max(const unsigned char* p, size_t n, U abs_mask) {
  U m = 0;
  for (size_t i = 0; i < n; ++i) {
    U v;
    std::memcpy(&v, p + i * sizeof(U), sizeof(U));
    v &= abs_mask;
    m = v > m ? v : m;
  }
  return m;
}
}  // namespace

float tensor_amax(const void* src, DType dtype, size_t rows, size_t cols) {
  if (!dtype_is_float(dtype))
    throw Error("tensor_amax: dtype " + std::string(dtype_name(dtype)) + " is not a float type");
  const auto* base = static_cast<const unsigned char*>(src);
  const size_t esize = dtype_size(dtype);
  const size_t n_rows = rows;
  std::vector<float> row_max(n_rows, 0.0f);
  std::atomic<bool> bad{false};
  parallel_for(0, n_rows, 1 + (1 << 16) / std::max<size_t>(cols, 1), [&](size_t r0, size_t r1) {
    std::vector<float> buf;
    for (size_t r = r0; r < r1; ++r) {
      const unsigned char* p = base + r * cols * esize;
      float m;
      if (dtype == DType::BF16) {
        const uint16_t b = abs_bits_max<uint16_t>(p, cols, 0x7FFF);
        if (b >= 0x7F80) bad = true;
        m = bf16_to_float(b);
      } else if (dtype == DType::F16) {
        const uint16_t b = abs_bits_max<uint16_t>(p, cols, 0x7FFF);
        if (b >= 0x7C00) bad = true;
        m = fp16_to_float(b);
      } else if (dtype == DType::F32) {
        const uint32_t b = abs_bits_max<uint32_t>(p, cols, 0x7FFFFFFFu);
        if (b >= 0x7F800000u) bad = true;
        std::memcpy(&m, &b, 4);
      } else {
        buf.resize(cols);
        decode_to_f32(p, dtype, cols, buf.data());
        m = 0.0f;
        for (float v : buf) {
          if (!std::isfinite(v)) bad = true;
          m = std::max(m, std::fabs(v));
        }
      }
      row_max[r] = m;
    }
  });
  if (bad) detail::throw_nonfinite(src, dtype, rows, cols);
  float amax = 0.0f;
  for (float m : row_max) amax = std::max(amax, m);
  return amax;
}

uint8_t nvfp4_max_scale_code(float bamax, float s2) {
  float s = bamax / (6.0f * s2);             // true IEEE division
  if (s == 0.0f) s = 1.0f;                   // all-zero block -> 0x38
  s = std::clamp(s, 0x1p-9f, 448.0f);        // tiny block -> 0x01
  return float_to_e4m3(s);
}

void nvfp4_quantize_ref(const void* src, DType dtype, size_t rows, size_t cols, float s2,
                        uint8_t* packed, uint8_t* scales) {
  detail::check_nvfp4_args(dtype, cols, s2);
  const size_t esize = dtype_size(dtype);
  const auto* base = static_cast<const unsigned char*>(src);
  const size_t nblocks = cols / kNvfp4Block;
  std::vector<float> row(cols);
  for (size_t r = 0; r < rows; ++r) {
    decode_to_f32(base + r * cols * esize, dtype, cols, row.data());
    for (size_t c = 0; c < cols; ++c)
      if (!std::isfinite(row[c])) detail::throw_nonfinite(src, dtype, rows, cols);
    for (size_t b = 0; b < nblocks; ++b) {
      const float* x = row.data() + b * kNvfp4Block;
      float bamax = 0.0f;
      for (size_t i = 0; i < kNvfp4Block; ++i) bamax = std::max(bamax, std::fabs(x[i]));
      const uint8_t sf = nvfp4_max_scale_code(bamax, s2);
      scales[r * nblocks + b] = sf;
      const float d = e4m3_to_float(sf) * s2;
      uint8_t* out = packed + r * (cols / 2) + b * (kNvfp4Block / 2);
      for (size_t i = 0; i < kNvfp4Block; i += 2) {
        const uint8_t lo = float_to_e2m1(x[i] / d);  // true division, not a reciprocal
        const uint8_t hi = float_to_e2m1(x[i + 1] / d);
        out[i / 2] = static_cast<uint8_t>(lo | (hi << 4));
      }
    }
  }
}

void nvfp4_dequantize(const uint8_t* packed, const uint8_t* scales, size_t rows, size_t cols,
                      float s2, float* out) {
  detail::check_nvfp4_args(DType::F32, cols, s2);
  const size_t nblocks = cols / kNvfp4Block;
  parallel_for(0, rows, 1 + (1 << 14) / std::max<size_t>(cols, 1), [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r)
      detail::nvfp4_dequantize_row(packed + r * (cols / 2), scales + r * nblocks, cols, s2,
                                   out + r * cols);
  });
}

}  // namespace fp4kit
