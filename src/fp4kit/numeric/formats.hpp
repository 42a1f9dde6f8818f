#pragma once
// Scalar conversions between float32 and the small number formats of NVFP4-SPEC.md section 1.
// These are the reference definitions; SIMD kernels must agree with them bit for bit.
#include <cstdint>

namespace fp4kit {

float bf16_to_float(uint16_t bits);
uint16_t float_to_bf16(float x);  // round to nearest even (as torch does)
float fp16_to_float(uint16_t bits);
uint16_t float_to_fp16(float x);  // round to nearest even

// E4M3FN: no infinities, max finite 448 (0x7E), NaN 0x7F/0xFF.
float e4m3_to_float(uint8_t code);
// Round to nearest even, subnormals kept. Clamps |x| to 448 first, so never returns NaN for finite x.
uint8_t float_to_e4m3(float x);
float e5m2_to_float(uint8_t code);
// E8M0 (MXFP4 scale): 2^(b-127); 0xFF is NaN.
float e8m0_to_float(uint8_t code);

// E2M1 element code (4 bits): sign taken before rounding (a small negative that rounds to 0 gives
// 0x8), ties to even, saturates at 6. Caller guarantees x is not NaN.
uint8_t float_to_e2m1(float x);
float e2m1_to_float(uint8_t code);

}  // namespace fp4kit
