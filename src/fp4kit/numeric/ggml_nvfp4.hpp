#pragma once
// NVFP4 as llama.cpp stores it (GGML_TYPE_NVFP4, ggml-common.h block_nvfp4): per row, blocks of
// 64 weights = 4 scale bytes (one unsigned E4M3 per 16 weights, sign bit clear) followed by 32
// bytes of E2M1 codes, where byte s*8+j of the block holds weight s*16+j in its low nibble and
// weight s*16+j+8 in its high nibble. The per-tensor global scale is not in the block: llama.cpp
// reads it from a separate F32 "<name>.scale" tensor and multiplies the product by it.
// ModelOpt / compressed-tensors store the same codes as byte k = weights 2k (low), 2k+1 (high)
// and the same E4M3 scale bytes, so the repack is lossless.
#include <cstdint>

namespace fp4kit {

// packed [rows, cols/2] (ModelOpt nibble order) + scales [rows, cols/16] (E4M3) -> out
// [rows, cols/64*36]. `row_of` (may be null): output row r takes source row row_of[r].
// Throws fp4kit::Error when cols % 64 != 0 or a scale byte is negative or NaN (bit 7 set on a
// non-zero byte, or 0x7F), naming the row and block; -0 (0x80) is written as 0.
void repack_nvfp4_to_ggml(const uint8_t* packed, const uint8_t* scales, uint64_t rows,
                          uint64_t cols, uint8_t* out, const uint64_t* row_of = nullptr);

}  // namespace fp4kit
