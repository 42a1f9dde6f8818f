#pragma once
// The SIMD block-scale search kernel (Google Highway, run-time dispatch); internal to numeric.
#include <cstddef>
#include <cstdint>

#include "fp4kit/numeric/dtype.hpp"

namespace fp4kit {
struct DistortionStats;
}

namespace fp4kit::detail {

bool nvfp4_search_simd_supports(DType dtype);

// Searches the block scales of rows [0, rows) and encodes them, with exactly the result of
// nvfp4_quantize_search_ref (caller has validated cols and s2). `hessian` as ScaleSearch.
// Returns false, leaving the outputs unspecified, when a row holds NaN or Inf.
// `stats`: null, or where the rows' error statistics are added (nvfp4_encode_rows_simd).
bool nvfp4_search_rows_simd(const void* src, DType dtype, size_t rows, size_t cols, float s2,
                            const float* hessian, uint8_t* packed, uint8_t* scales,
                            DistortionStats* stats = nullptr);

// The search's tie rule (nvfp4_search.hpp): is (err, code) preferred over (best_err, best_code)?
bool search_prefers(float err, int code, float best_err, int best_code, int base);

// An all-zero H_j (no activation ever reached these 16 channels): that block uses MSE.
bool hessian_block_is_zero(const float* h16x16);

// Codes of one row [cols] for given block scale codes (x / d, true division, as the codec).
void nvfp4_encode_with_scales(const float* row, size_t cols, float s2, const uint8_t* scales,
                              uint8_t* packed);

}  // namespace fp4kit::detail
