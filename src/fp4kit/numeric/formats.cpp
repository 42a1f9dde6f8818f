// Scalar reference conversions (NVFP4-SPEC.md section 1). Pure integer bit manipulation so the
// results never depend on the FPU rounding mode or on compiler contraction.
#include "fp4kit/numeric/formats.hpp"

#include <cstring>

namespace fp4kit {

namespace {
inline uint32_t bits_of(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}
inline float float_of(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// Rounds v >> shift to nearest, ties to even (shift may exceed 31: the result is then 0).
inline uint32_t shift_rne(uint64_t v, unsigned shift) {
  if (shift == 0) return static_cast<uint32_t>(v);
  if (shift >= 63) return 0;
  const uint64_t q = v >> shift;
  const uint64_t rem = v & ((uint64_t{1} << shift) - 1);
  const uint64_t half = uint64_t{1} << (shift - 1);
  return static_cast<uint32_t>(q + ((rem > half || (rem == half && (q & 1))) ? 1 : 0));
}
}  // namespace

float bf16_to_float(uint16_t bits) { return float_of(uint32_t{bits} << 16); }

uint16_t float_to_bf16(float x) {
  const uint32_t u = bits_of(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x0040);  // quiet NaN
  // Round to nearest even on the 16 dropped bits; a carry correctly bumps the exponent (to Inf).
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

float fp16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t man = h & 0x3FFu;
  if (exp == 0x1F) return float_of(sign | 0x7F800000u | (man << 13));
  if (exp == 0) {
    // Subnormal: man * 2^-24, exact in float32.
    const float mag = static_cast<float>(man) * 5.9604644775390625e-08f;
    return sign ? -mag : mag;
  }
  return float_of(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t float_to_fp16(float x) {
  const uint32_t u = bits_of(x);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return sign | 0x7E00u;  // NaN
  if (a >= 0x47800000u) {                      // >= 65536: certainly Inf after rounding
    return sign | 0x7C00u;
  }
  const int e = static_cast<int>(a >> 23) - 127;
  const uint64_t sig = (a >> 23) ? ((a & 0x7FFFFFu) | 0x800000u) : (a & 0x7FFFFFu);
  if (e >= -14) {
    // Normal: keep 10 mantissa bits; the carry runs into the exponent (65520 -> Inf, as IEEE).
    const uint32_t q = shift_rne(sig, 13);  // in [1024, 2048]
    return sign | static_cast<uint16_t>(((e + 14) << 10) + q);
  }
  // Subnormal: value / 2^-24, rounded; a float subnormal input has e = -127 but sig without
  // the hidden bit, which is exactly value * 2^149 -> shift by 125.
  const int shift = (a >> 23) ? (23 - 24 - e) : 125;
  return sign | static_cast<uint16_t>(shift_rne(sig, static_cast<unsigned>(shift)));
}

float e4m3_to_float(uint8_t code) {
  const uint32_t sign = uint32_t{code & 0x80u} << 24;
  const uint32_t exp = (code >> 3) & 0xFu;
  const uint32_t man = code & 7u;
  if (exp == 0xF && man == 7) return float_of(0x7FC00000u | sign);
  if (exp == 0) {
    const float mag = static_cast<float>(man) * 0.001953125f;  // man * 2^-9, exact
    return sign ? -mag : mag;
  }
  return float_of(sign | ((exp + 120) << 23) | (man << 20));
}

uint8_t float_to_e4m3(float x) {
  const uint32_t u = bits_of(x);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return sign | 0x7Fu;  // NaN stays NaN (never reached from finite input)
  if (a >= 0x43E00000u) return sign | 0x7Eu;  // clamp |x| >= 448 (and Inf) to 448
  const int e = static_cast<int>(a >> 23) - 127;
  const uint64_t sig = (a >> 23) ? ((a & 0x7FFFFFu) | 0x800000u) : (a & 0x7FFFFFu);
  if (e >= -6) {
    // Normal: 3 mantissa bits kept; q in [8, 16]; a carry to 16 moves to the next binade.
    const uint32_t q = shift_rne(sig, 20);
    return sign | static_cast<uint8_t>((e + 6) * 8 + q);
  }
  // Subnormal: code = round(|x| / 2^-9); 8 rounds up into the smallest normal 0x08.
  const int shift = (a >> 23) ? (23 - 9 - e) : 200;
  return sign | static_cast<uint8_t>(shift_rne(sig, static_cast<unsigned>(shift)));
}

float e5m2_to_float(uint8_t code) {
  // E5M2 is the upper byte of IEEE binary16.
  return fp16_to_float(static_cast<uint16_t>(uint16_t{code} << 8));
}

float e8m0_to_float(uint8_t code) {
  if (code == 0xFF) return float_of(0x7FC00000u);
  if (code == 0) return float_of(0x00400000u);  // 2^-127 is a float32 subnormal
  return float_of(uint32_t{code} << 23);
}

uint8_t float_to_e2m1(float x) {
  // Sign before rounding: -0.1 -> 0x8; -0.0 is not < 0 -> 0x0.
  const uint8_t sign = x < 0.0f ? 0x8 : 0x0;
  const float a = x < 0.0f ? -x : x;
  // Grid 0, .5, 1, 1.5, 2, 3, 4, 6. Boundaries with ties to the even mantissa:
  // <=0.25 -> 0, <0.75 -> .5, <=1.25 -> 1, <1.75 -> 1.5, <=2.5 -> 2, <3.5 -> 3, <=5 -> 4, else 6.
  uint8_t m;
  if (a <= 0.25f) m = 0;
  else if (a < 0.75f) m = 1;
  else if (a <= 1.25f) m = 2;
  else if (a < 1.75f) m = 3;
  else if (a <= 2.5f) m = 4;
  else if (a < 3.5f) m = 5;
  else if (a <= 5.0f) m = 6;
  else m = 7;
  return sign | m;
}

float e2m1_to_float(uint8_t code) {
  static constexpr float kMag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float m = kMag[code & 7];
  return (code & 8) ? -m : m;
}

}  // namespace fp4kit
