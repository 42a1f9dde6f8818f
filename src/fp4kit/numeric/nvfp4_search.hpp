#pragma once
// NVFP4 with searched block scales (issue 15; research note accuracy-beyond-rtn.md section 4.1).
// The output is standard NVFP4: only which E4M3 code each 16-weight block gets changes. Per block
// every positive finite E4M3 code c (0x01..0x7E) is a candidate; with d = e4m3(c) * s2 the block's
// codes are e2m1(w / d) (true division, as nvfp4_quantize) and its dequantized weights are
// e2m1_value(code) * e4m3(c) * s2, exactly what a loader computes. The chosen code minimises
//   Mse:     sum_i dw_i^2                    (dw = w - dequantized w)
//   Hessian: dw^T H_j dw                     (H_j: the 16x16 block of X^T X for column block j)
// evaluated in float32 in a fixed order (nvfp4_block_objective). Ties keep the code closest to the
// max-based code (the one nvfp4_quantize writes), then the smaller code, so the max-based code is
// kept unless another is strictly better, and the result is deterministic.
#include <cstddef>
#include <cstdint>

#include "fp4kit/numeric/dtype.hpp"

namespace fp4kit {

struct DistortionStats;

// Hessian blocks of one matrix with K = cols: [cols/16][16][16] float32, row-major, symmetric.
// nullptr selects the MSE objective; so does an all-zero H_j for its column block (channels no
// token reached: every code would tie).

struct ScaleSearch {
  const float* hessian = nullptr;
};

// Objective of one block w[16] under scale code `code` (float32, the order the search uses):
//   MSE:     e = 0; for i: e += dw_i * dw_i
//   Hessian: e = 0; for i: t = H[i][i] * dw_i; for k > i: t += (2 H[i][k]) * dw_k; e += dw_i * t
// dw_i = |w_i| - e2m1(|w_i| / d) * e4m3(code) * s2 (products in that order).
float nvfp4_block_objective(const float* w, uint8_t code, float s2, const float* h16x16);

// The max-based (round-to-nearest) scale code of a block with max |w| = bamax: what
// nvfp4_quantize writes (s = bamax / (6 s2), 0 -> 1, clamp [2^-9, 448], E4M3 RNE).
uint8_t nvfp4_max_scale_code(float bamax, float s2);

// Quantizes rows with searched block scales (all cores, SIMD with pruning; never depends on
// thread count or instruction set). Same errors as nvfp4_quantize. `error`: null, or set to the
// statistics nvfp4_distortion would compute for the result (the same bits, measured while
// encoding, as nvfp4_quantize_with_error).
void nvfp4_quantize_search(const void* src, DType dtype, size_t rows, size_t cols, float s2,
                           const ScaleSearch& search, uint8_t* packed, uint8_t* scales,
                           DistortionStats* error = nullptr);

// Scalar reference: every candidate of every block, single-threaded (the definition).
void nvfp4_quantize_search_ref(const void* src, DType dtype, size_t rows, size_t cols, float s2,
                               const ScaleSearch& search, uint8_t* packed, uint8_t* scales);

}  // namespace fp4kit
