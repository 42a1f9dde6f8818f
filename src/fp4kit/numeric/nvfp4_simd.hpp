#pragma once
// The SIMD NVFP4 row kernel (Google Highway, run-time dispatch); internal to numeric.
// nvfp4_quantize() splits rows across threads and calls this per row range.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fp4kit/numeric/dtype.hpp"

namespace fp4kit {
struct DistortionStats;
}

namespace fp4kit::detail {

// True for the dtypes the SIMD kernel reads directly (BF16, F16, F32).
bool nvfp4_simd_supports(DType dtype);

// Quantizes rows [0, rows) exactly like nvfp4_quantize_ref (caller has validated cols and s2).
// Returns false, leaving the outputs unspecified, when a row holds NaN or Inf. `stats`: null, or
// where the error statistics of the rows are added, in order, exactly as nvfp4_distortion sums
// them (distortion.hpp): pass whole chunks of kDistortionChunkRows rows to get its numbers.
bool nvfp4_quantize_rows_simd(const void* src, DType dtype, size_t rows, size_t cols, float s2,
                              uint8_t* packed, uint8_t* scales, DistortionStats* stats = nullptr);

// Encodes rows [0, rows) with the given block scale codes [rows, cols/16] (the element codes
// e2m1(x / (e4m3(scale) * s2)), exactly as the reference). False on NaN/Inf, as above.
bool nvfp4_encode_rows_simd(const void* src, DType dtype, size_t rows, size_t cols, float s2,
                            const uint8_t* scales, uint8_t* packed,
                            DistortionStats* stats = nullptr);

// Name of the instruction set the dispatcher picks now ("AVX3", "AVX2", "NEON", "SVE", ...).
std::string nvfp4_simd_target();

// Every Highway target compiled in and supported by this CPU (for tests that run each one via
// hwy::SetSupportedTargetsForTest).
std::vector<int64_t> nvfp4_simd_targets();

}  // namespace fp4kit::detail
