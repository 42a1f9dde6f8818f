#pragma once
// Decoding of quantized checkpoint weights on the GPU: the stored bytes of FP8 block-scaled
// (DeepSeek weight_scale_inv), MXFP4 (gpt-oss *_blocks / *_scales) and NVFP4 (ModelOpt and
// compressed-tensors) linears, moved to the device as they are, become the float32 values the
// host decoding (engine/weights.cpp, numeric/source_formats.cpp, nvfp4_dequantize) gives, bit for
// bit: the same exact code tables and the same one or two float32 roundings per value. Pointers
// are device memory; launchers check the launch and throw fp4kit::Error.
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "fp4kit/engine/cuda/kernels.hpp"

namespace fp4kit::engine::cuda {

// The "no bad element" value of the *first_bad words below.
inline constexpr unsigned long long kNoBadElement = ~0ull;

// out[r, c] = e4m3(codes[r, c]) * grid[r / block_rows, c / block_cols] for W [n, k]; the grid is
// F32 or (grid_bf16) BF16, [ceil(n / block_rows), grid_cols], already checked (finite, > 0).
// *first_bad = min(*first_bad, r * k + c) for a NaN code (0x7F / 0xFF).
void fp8_block_decode(const uint8_t* codes, size_t n, size_t k, const void* grid, bool grid_bf16,
                      size_t grid_cols, size_t block_rows, size_t block_cols, float* out,
                      unsigned long long* first_bad, cudaStream_t s);

// W [n, k] from NVFP4 codes and E4M3 block scales (16 values a block along k) with any strides:
// the code byte of row r, byte j (values 2j low nibble, 2j + 1 high) is codes[r * code_rs + j *
// code_cs], the scale of row r, block b scales[r * sc_rs + b * sc_cs]. w = e2m1 * scale * s2, or
// with `divide` e2m1 * (scale / s2) (compressed-tensors' global scale). k % 16 == 0.
void nvfp4_decode(const uint8_t* codes, size_t code_rs, size_t code_cs, const uint8_t* scales,
                  size_t sc_rs, size_t sc_cs, size_t n, size_t k, float s2, bool divide,
                  float* out, cudaStream_t s);

// MXFP4: `groups` blocks of 32 values, block g = 16 bytes at blocks + 16 g (value 2j in the low
// nibble of byte j) times 2^(scales[g] - 127). *first_bad = min(*first_bad, g) for a 0xFF scale.
void mxfp4_decode(const uint8_t* blocks, const uint8_t* scales, size_t groups, float* out,
                  unsigned long long* first_bad, cudaStream_t s);

// out[r, c] = float(src[c, r]) for src [k, n] of BF16/F16/F32 (gpt-oss float BMM experts).
void to_f32_transposed(const void* src, SrcType type, size_t k, size_t n, float* out,
                       cudaStream_t s);

}  // namespace fp4kit::engine::cuda
