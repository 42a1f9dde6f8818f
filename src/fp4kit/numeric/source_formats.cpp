// FP8 block-scaled and MXFP4 decoding (NVFP4-SPEC.md sections 1 and 8).
#include "fp4kit/numeric/source_formats.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "fp4kit/error.hpp"
#include "fp4kit/numeric/convert.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace fp4kit {

namespace {

// One table lookup per element instead of bit twiddling: decoding is memory bound.
std::array<float, 256> make_e4m3_table() {
  std::array<float, 256> t{};
  for (int i = 0; i < 256; ++i) t[i] = e4m3_to_float(static_cast<uint8_t>(i));
  return t;
}
const std::array<float, 256>& e4m3_table() {
  static const std::array<float, 256> t = make_e4m3_table();
  return t;
}

// The numeric layer links no fmt: messages are built with a stream.
template <typename... A>
std::string cat(const A&... a) {
  std::ostringstream o;
  (o << ... << a);
  return o.str();
}

size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

float scale_at(const Fp8BlockScales& s, size_t br, size_t bc) {
  const size_t i = br * s.grid_cols + bc;
  const auto* p = static_cast<const unsigned char*>(s.data);
  if (s.dtype == DType::F32) {
    float v;
    std::memcpy(&v, p + i * 4, 4);
    return v;
  }
  uint16_t b;
  std::memcpy(&b, p + i * 2, 2);
  return bf16_to_float(b);
}

void check_scale_value(float v, size_t br, size_t bc, std::string_view tensor) {
  if (std::isfinite(v) && v > 0) return;
  const char* what = std::isnan(v) ? "NaN" : std::isinf(v) ? "infinite" : v == 0 ? "zero"
                                                                             : "negative";
  throw Error(cat("FP8 block scale tensor '", tensor, "': block [", br, ", ", bc, "] is ", what,
                  " (", v, "); a weight_scale_inv must be finite and > 0 (broken or truncated "
                  "checkpoint)"));
}

}  // namespace

void check_fp8_block_scales(const Fp8BlockScales& s, size_t n, size_t k, std::string_view tensor) {
  if (s.dtype != DType::F32 && s.dtype != DType::BF16)
    throw Error(cat("FP8 block scale tensor '", tensor, "': dtype ", dtype_name(s.dtype),
                    " (expected F32 or BF16)"));
  if (s.block_rows == 0 || s.block_cols == 0)
    throw Error(cat("FP8 block scale tensor '", tensor, "': block size ", s.block_rows, "x",
                    s.block_cols));
  const size_t want_r = ceil_div(n, s.block_rows), want_c = ceil_div(k, s.block_cols);
  if (s.grid_rows != want_r || s.grid_cols != want_c)
    throw Error(cat("FP8 block scale tensor '", tensor, "': shape [", s.grid_rows, ", ",
                    s.grid_cols, "] but a [", n, ", ", k, "] weight in ", s.block_rows, "x",
                    s.block_cols, " blocks needs [", want_r, ", ", want_c, "]"));
  for (size_t br = 0; br < s.grid_rows; ++br)
    for (size_t bc = 0; bc < s.grid_cols; ++bc) check_scale_value(scale_at(s, br, bc), br, bc, tensor);
}

void fp8_block_dequantize(const uint8_t* codes, size_t row_begin, size_t rows, size_t n, size_t k,
                          const Fp8BlockScales& s, float* out, std::string_view tensor) {
  if (row_begin + rows > n)
    throw Error(cat("FP8 tensor '", tensor, "': rows [", row_begin, ", ", row_begin + rows,
                    ") outside [0, ", n, ")"));
  check_fp8_block_scales(s, n, k, std::string(tensor) + "_scale_inv");
  const auto& lut = e4m3_table();
  parallel_for(0, rows, 16, [&](size_t r0, size_t r1) {
    std::vector<float> row_scales(s.grid_cols);
    size_t cached_br = SIZE_MAX;
    for (size_t r = r0; r < r1; ++r) {
      const size_t br = (row_begin + r) / s.block_rows;
      if (br != cached_br) {
        for (size_t bc = 0; bc < s.grid_cols; ++bc) row_scales[bc] = scale_at(s, br, bc);
        cached_br = br;
      }
      const uint8_t* src = codes + r * k;
      float* dst = out + r * k;
      for (size_t bc = 0; bc < s.grid_cols; ++bc) {
        const size_t c0 = bc * s.block_cols, c1 = std::min(k, c0 + s.block_cols);
        const float sc = row_scales[bc];
        for (size_t c = c0; c < c1; ++c) dst[c] = lut[src[c]] * sc;
      }
      for (size_t c = 0; c < k; ++c)
        if ((src[c] & 0x7F) == 0x7F)
          throw Error(cat("FP8 tensor '", tensor, "': NaN code ", int(src[c]), " at row ",
                          row_begin + r, ", column ", c));
    }
  });
}

float fp8_block_amax(const uint8_t* codes, size_t row_begin, size_t rows, size_t n, size_t k,
                     const Fp8BlockScales& s, std::string_view tensor) {
  if (row_begin + rows > n)
    throw Error(cat("FP8 tensor '", tensor, "': rows [", row_begin, ", ", row_begin + rows,
                    ") outside [0, ", n, ")"));
  check_fp8_block_scales(s, n, k, std::string(tensor) + "_scale_inv");
  const auto& lut = e4m3_table();
  // Per row and column block: the largest code magnitude (codes compare like magnitudes once the
  // sign bit is cleared), then one multiply by the block's scale.
  std::vector<float> row_max(rows, 0.0f);
  parallel_for(0, rows, 16, [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) {
      const size_t br = (row_begin + r) / s.block_rows;
      const uint8_t* src = codes + r * k;
      float m = 0;
      for (size_t bc = 0; bc < s.grid_cols; ++bc) {
        const size_t c0 = bc * s.block_cols, c1 = std::min(k, c0 + s.block_cols);
        uint8_t top = 0;
        for (size_t c = c0; c < c1; ++c) top = std::max<uint8_t>(top, src[c] & 0x7F);
        if (top == 0x7F) {
          for (size_t c = c0; c < c1; ++c)
            if ((src[c] & 0x7F) == 0x7F)
              throw Error(cat("FP8 tensor '", tensor, "': NaN code ", int(src[c]), " at row ",
                              row_begin + r, ", column ", c));
        }
        m = std::max(m, lut[top] * scale_at(s, br, bc));
      }
      row_max[r] = m;
    }
  });
  float amax = 0;
  for (float m : row_max) amax = std::max(amax, m);
  return amax;
}

namespace {

float grid_value(const PackedIntScales& s, size_t i) {
  float v;
  decode_to_f32(static_cast<const unsigned char*>(s.data) + i * dtype_size(s.dtype), s.dtype, 1,
                &v);
  return v;
}

// Word j of a row, assembled from its little-endian bytes (whatever the host's byte order).
uint32_t word_at(const uint8_t* row, size_t j) {
  const uint8_t* b = row + 4 * j;
  return uint32_t(b[0]) | uint32_t(b[1]) << 8 | uint32_t(b[2]) << 16 | uint32_t(b[3]) << 24;
}

}  // namespace

void check_packed_int(const PackedIntScales& s, int bits, size_t packed_cols, size_t n, size_t k,
                      std::string_view tensor, std::string_view scale_tensor) {
  if (!packed_int_bits_supported(bits))
    throw Error(cat("pack-quantized tensor '", tensor, "': num_bits ", bits,
                    " is not supported (4 or 8: the widths whose packing every compressed-tensors "
                    "version wrote the same way)"));
  const size_t want_words = ceil_div(k * static_cast<size_t>(bits), 32);
  if (packed_cols != want_words)
    throw Error(cat("pack-quantized tensor '", tensor, "': ", packed_cols,
                    " int32 words per row, but ", k, " columns of ", bits, " bits need ",
                    want_words));
  if (s.dtype != DType::BF16 && s.dtype != DType::F16 && s.dtype != DType::F32)
    throw Error(cat("pack-quantized scale tensor '", scale_tensor, "': dtype ",
                    dtype_name(s.dtype), " (expected BF16, F16 or F32)"));
  if (s.group == 0)
    throw Error(cat("pack-quantized scale tensor '", scale_tensor, "': group size 0"));
  const size_t want_c = ceil_div(k, s.group);
  if (s.grid_rows != n || s.grid_cols != want_c)
    throw Error(cat("pack-quantized scale tensor '", scale_tensor, "': shape [", s.grid_rows, ", ",
                    s.grid_cols, "] but a [", n, ", ", k, "] weight in groups of ", s.group,
                    " columns needs [", n, ", ", want_c, "]"));
  for (size_t i = 0; i < s.grid_rows * s.grid_cols; ++i) {
    const float v = grid_value(s, i);
    if (!std::isfinite(v) || v < 0)
      throw Error(cat("pack-quantized scale tensor '", scale_tensor, "': scale [", i / s.grid_cols,
                      ", ", i % s.grid_cols, "] is ", v,
                      " (a symmetric integer scale must be finite and >= 0)"));
  }
}

void packed_int_dequantize(const uint8_t* packed, size_t row_begin, size_t rows, size_t n,
                           size_t k, int bits, const PackedIntScales& s, float* out,
                           std::string_view tensor, std::string_view scale_tensor) {
  if (row_begin + rows > n)
    throw Error(cat("pack-quantized tensor '", tensor, "': rows [", row_begin, ", ",
                    row_begin + rows, ") outside [0, ", n, ")"));
  const size_t words = ceil_div(k * static_cast<size_t>(bits), 32);
  check_packed_int(s, bits, words, n, k, tensor, scale_tensor);
  const uint32_t mask = (1u << bits) - 1;
  const int offset = 1 << (bits - 1);
  const size_t per_word = 32 / static_cast<size_t>(bits);  // 4 and 8 divide 32: no straddling
  parallel_for(0, rows, 16, [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) {
      const size_t row = row_begin + r;
      const uint8_t* src = packed + row * words * 4;
      float* dst = out + r * k;
      for (size_t g = 0; g < s.grid_cols; ++g) {
        const float sc = grid_value(s, row * s.grid_cols + g);
        const size_t c1 = std::min(k, (g + 1) * s.group);
        for (size_t c = g * s.group; c < c1; ++c) {
          const uint32_t w = word_at(src, c / per_word);
          const int q = static_cast<int>((w >> ((c % per_word) * bits)) & mask) - offset;
          dst[c] = static_cast<float>(q) * sc;
        }
      }
    }
  });
}

void mxfp4_dequantize(const uint8_t* blocks, const uint8_t* scales, size_t groups, float* out,
                      std::string_view scales_tensor) {
  static const float kE2m1[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                  -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
  parallel_for(0, groups, 1024, [&](size_t g0, size_t g1) {
    for (size_t g = g0; g < g1; ++g) {
      if (scales[g] == 0xFF)
        throw Error(cat("MXFP4 scale tensor '", scales_tensor, "': block ", g,
                        " has the NaN scale 0xFF"));
      // 2^(s-127) exactly, including the subnormal 2^-127 of s = 0.
      const float sc = std::ldexp(1.0f, static_cast<int>(scales[g]) - 127);
      const uint8_t* b = blocks + g * (kMxfp4Block / 2);
      float* o = out + g * kMxfp4Block;
      for (size_t j = 0; j < kMxfp4Block / 2; ++j) {
        o[2 * j] = kE2m1[b[j] & 0x0F] * sc;
        o[2 * j + 1] = kE2m1[b[j] >> 4] * sc;
      }
    }
  });
}

}  // namespace fp4kit
