#pragma once
// The NVFP4 codec of NVFP4-SPEC.md section 2, bit-exact with ModelOpt's weight quantization.
//
// A weight W [rows, cols] (cols = K, the input dimension) becomes
//   packed [rows, cols/2]  (two E2M1 codes per byte, even element in the LOW nibble)
//   scales [rows, cols/16] (E4M3FN block scales)
//   s2                     (float32 per-tensor scale, shared across a fusion group)
#include <cstddef>
#include <cstdint>

#include "fp4kit/numeric/dtype.hpp"

namespace fp4kit {

struct DistortionStats;

inline constexpr size_t kNvfp4Block = 16;

// How s2 is computed from amax. Gpu: amax * (float)(1/2688) (what published checkpoints have);
// Cpu: amax / 2688.0f (ModelOpt run on CPU).
enum class ScaleForm { Gpu, Cpu };

// s2 for a tensor (or fusion group) whose max |w| is amax. amax == 0 is treated as amax = 1
// (fp4kit deliberately differs from ModelOpt there; see the spec). Also used for input_scale.
// `e4m3_max` is M in s2 = amax / (6 M): 448 (ModelOpt, the default) or 256, the headroom of the
// 4/6 convention that lets searched block scales go above amax_b / 6 for the largest blocks.
float nvfp4_global_scale(float amax, ScaleForm form = ScaleForm::Gpu, float e4m3_max = 448.0f);

// The plausible range of the amax a per-tensor scale stands for (amax = 6 x 448 x s2 for
// weight_scale_2 and input_scale): real weights and activations of BF16 models stay well inside
// it (massive activations reach about 1e4, 2^-24-scaled q/k weights about 1e-8). A scale outside
// it decodes weights to Inf or rounds every activation to zero: verify refuses it, and so does
// quantize for statistics that would give one.
inline constexpr double kMinPlausibleAmax = 1e-12;
inline constexpr double kMaxPlausibleAmax = 1e7;
inline bool plausible_scale(double s) {
  const double amax = s * 2688.0;
  return amax >= kMinPlausibleAmax && amax <= kMaxPlausibleAmax;
}

// max |x| over a [rows, cols] tensor of a float dtype. Throws fp4kit::Error naming row and column
// of the first NaN or Inf.
float tensor_amax(const void* src, DType dtype, size_t rows, size_t cols);

// Quantizes rows with the given s2 (all cores, SIMD, dispatched at run time). Bytes never depend on
// the thread count or the instruction set. Throws fp4kit::Error when cols % 16 != 0 or the input
// holds NaN/Inf (naming row and column).
void nvfp4_quantize(const void* src, DType dtype, size_t rows, size_t cols, float s2,
                    uint8_t* packed, uint8_t* scales);

// nvfp4_quantize that also sets `error` to the statistics nvfp4_distortion would compute for the
// result (the same bits), measured in the same pass while each block is in registers.
void nvfp4_quantize_with_error(const void* src, DType dtype, size_t rows, size_t cols, float s2,
                               uint8_t* packed, uint8_t* scales, DistortionStats& error);

// Scalar single-threaded reference of nvfp4_quantize: the definition the fast path is tested against.
void nvfp4_quantize_ref(const void* src, DType dtype, size_t rows, size_t cols, float s2,
                        uint8_t* packed, uint8_t* scales);

// w = e2m1_value(code) * float(scale) * s2, as every loader does.
void nvfp4_dequantize(const uint8_t* packed, const uint8_t* scales, size_t rows, size_t cols,
                      float s2, float* out);

}  // namespace fp4kit
