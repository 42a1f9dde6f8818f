#pragma once
// Fast scalar helpers for decoding NVFP4 rows and float sources one row at a time, written so the
// compiler vectorizes them (tables instead of per-element format functions, no calls in the inner
// loops). Results are bit-identical to nvfp4_dequantize / decode_to_f32: the same float operations
// in the same order (e2m1 * scale * s2, left to right).
#include <cstddef>
#include <cstdint>

#include "fp4kit/numeric/dtype.hpp"

namespace fp4kit::detail {

// All 256 E4M3FN codes as float (NaN for 0x7F/0xFF).
const float* e4m3_table();
// The 16 E2M1 codes as float (sign in bit 3).
const float* e2m1_table();

// out[0..cols) = e2m1(code) * float(scale) * s2 for one packed row.
void nvfp4_dequantize_row(const uint8_t* packed, const uint8_t* scales, size_t cols, float s2,
                          float* out);
// out[0..count) = float(src[i]) for BF16 / F16 / F32 (others through decode_to_f32).
void decode_row_f32(const void* src, DType dtype, size_t count, float* out);

}  // namespace fp4kit::detail
