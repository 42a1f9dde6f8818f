#pragma once
// Simulated NVFP4 activation quantization for W4A4 checkpoints, as Blackwell kernels do it at run
// time (vLLM's reference `ref_nvfp4_quant`, which mirrors the CUDA cvt_warp_fp16_to_fp4 kernel):
//   gs     = input global scale = 1 / input_scale  (format B stores it as input_global_scale)
//   per 16 consecutive values along K of one input row:
//     vmax = max |x|
//     sf   = e4m3( clamp(gs * (vmax * (1/6)), 448) )          (round to nearest even)
//     os   = sf == 0 ? 0 : 1 / (sf * (1/gs))                   (output scale)
//     q    = e2m1( clamp(x * os, -6, 6) )
//     x'   = q * (sf / gs)                                      (what the GEMM multiplies)
// The CUDA kernel uses approximate reciprocals; this is the exact-division reference.
#include <cstddef>

namespace fp4kit::engine {

// Replaces x [rows, k] (k % 16 == 0) with its quantize-dequantize image, in place.
void nvfp4_fake_quant_activations(float* x, size_t rows, size_t k, float global_scale);

}  // namespace fp4kit::engine
