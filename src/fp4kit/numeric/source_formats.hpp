#pragma once
// Decoders for the quantized SOURCE formats of NVFP4-SPEC.md section 8 (what checkpoints ship in,
// not what fp4kit writes): FP8 E4M3 with 2-D block scales (DeepSeek-V3/R1, Kimi-K2, Qwen3-FP8:
// "weight_scale_inv") and MXFP4 (gpt-oss: "*_blocks" + "*_scales"). Both decode to float32, which
// the NVFP4 quantizer then reads like any other float source. No file or model knowledge here:
// callers pass raw bytes, shapes and a tensor name for the error messages.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fp4kit/numeric/dtype.hpp"

namespace fp4kit {

// The scale grid of an FP8 block-quantized matrix W [n, k]: scale_inv[ceil(n/block_rows),
// ceil(k/block_cols)] of F32 or BF16 (partial edge blocks have a full scale of their own).
// w[r, c] = float(fp8[r, c]) * scale_inv[r / block_rows, c / block_cols].
struct Fp8BlockScales {
  const void* data = nullptr;  // the grid, row-major (may be unaligned)
  DType dtype = DType::F32;    // F32 or BF16
  size_t grid_rows = 0, grid_cols = 0;
  size_t block_rows = 128, block_cols = 128;
};

// Throws fp4kit::Error unless the grid is [ceil(n/block_rows), ceil(k/block_cols)] of F32/BF16 and
// every scale is finite and > 0 (a zero, negative, NaN or Inf scale names the tensor and block).
// `tensor` is the scale tensor's name.
void check_fp8_block_scales(const Fp8BlockScales& scales, size_t n, size_t k,
                            std::string_view tensor);

// Decodes rows [row_begin, row_begin + rows) of the FP8 E4M3FN matrix [n, k]; `codes` points at row
// row_begin, `out` receives rows * k floats. Checks the scales (as above, naming them
// "<tensor>_scale_inv") and fails on a NaN code (0x7F / 0xFF) naming row and column. Runs on all
// cores. `tensor` names the weight tensor.
void fp8_block_dequantize(const uint8_t* codes, size_t row_begin, size_t rows, size_t n, size_t k,
                          const Fp8BlockScales& scales, float* out, std::string_view tensor);

// max |w| over the same rows, equal to the max of fp8_block_dequantize's output (a positive scale
// and float rounding are both monotonic, so the block's largest code times its scale is the
// block's amax) without writing the values: the fusion-group pass reads each weight once more.
float fp8_block_amax(const uint8_t* codes, size_t row_begin, size_t rows, size_t n, size_t k,
                     const Fp8BlockScales& scales, std::string_view tensor);

// compressed-tensors "pack-quantized" integer weights (Kimi-K2 Thinking / K2.5 routed experts,
// llm-compressor W4A16 / W8A16): "<m>.weight_packed" I32 [n, ceil(k * bits / 32)] holding the
// signed integers q in [-2^(bits-1), 2^(bits-1) - 1] stored as q + 2^(bits-1), element c of a row
// at bit c * bits of the row's little-endian words (dense packing; for bits 4 and 8 the same
// layout every compressed-tensors version wrote), "<m>.weight_scale" [n, ceil(k / group)] of
// BF16/F16/F32 (group strategy; channel strategy: [n, 1], group = k), symmetric (no zero point):
// w[r, c] = q[r, c] * scale[r, c / group], one float32 product: exact for BF16/F16 scales (q has
// at most 7 significant bits, the scale 8 or 11: the product fits float32's 24), and for F32
// scales the one correctly rounded product compressed-tensors' float32 dequantize computes too.
struct PackedIntScales {
  const void* data = nullptr;  // the grid, row-major (may be unaligned)
  DType dtype = DType::BF16;   // BF16, F16 or F32
  size_t grid_rows = 0, grid_cols = 0;
  size_t group = 32;           // columns per scale (k for the channel strategy)
};
inline constexpr bool packed_int_bits_supported(int bits) { return bits == 4 || bits == 8; }

// Throws fp4kit::Error unless bits is 4 or 8, the packed tensor holds [n, ceil(k * bits / 32)]
// words, the grid is [n, ceil(k / group)] of BF16/F16/F32 and every scale is finite and >= 0 (a
// zero scale is an all-zero group). `tensor` names the weight_packed tensor, `scale_tensor` the
// grid.
void check_packed_int(const PackedIntScales& scales, int bits, size_t packed_cols, size_t n,
                      size_t k, std::string_view tensor, std::string_view scale_tensor);

// Decodes rows [row_begin, row_begin + rows) of the [n, k] matrix; `packed` points at row 0 of
// the weight_packed data (I32, little-endian), `out` receives rows * k floats. Checks as above.
// Runs on all cores.
void packed_int_dequantize(const uint8_t* packed, size_t row_begin, size_t rows, size_t n,
                           size_t k, int bits, const PackedIntScales& scales, float* out,
                           std::string_view tensor, std::string_view scale_tensor);

// MXFP4 as gpt-oss stores it: blocks U8 [..., G, 16] (32 E2M1 codes per block, element 2j in the
// LOW nibble of byte j) and scales U8 E8M0 [..., G] (2^(s - 127)). `groups` = product of the
// leading dims times G; `out` receives groups * 32 floats, w = e2m1(code) * 2^(scale - 127).
// Throws fp4kit::Error on a 0xFF (NaN) scale, naming the scales tensor and block index.
inline constexpr size_t kMxfp4Block = 32;
void mxfp4_dequantize(const uint8_t* blocks, const uint8_t* scales, size_t groups, float* out,
                      std::string_view scales_tensor);

}  // namespace fp4kit
