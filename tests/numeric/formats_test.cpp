// Scalar number formats against the definitions of NVFP4-SPEC.md section 1. Expected values come
// from the format definitions (ldexp formulas, explicit grids), never from the code under test.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "fp4kit/numeric/formats.hpp"

namespace fp4kit {
namespace {

float from_bits(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// E4M3FN value straight from the definition: (-1)^s * 2^(E-7) * (1 + m/8), subnormal 2^-6 * m/8.
double e4m3_definition(int code) {
  const int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
  const double mag = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
  return s ? -mag : mag;
}

TEST(E4M3, AllCodesDecodeToTheirDefinition) {
  for (int c = 0; c < 256; ++c) {
    const float v = e4m3_to_float(static_cast<uint8_t>(c));
    if ((c & 0x7F) == 0x7F) {
      EXPECT_TRUE(std::isnan(v)) << "code " << c;
      continue;
    }
    EXPECT_EQ(static_cast<double>(v), e4m3_definition(c)) << "code " << c;
    EXPECT_EQ(std::signbit(v), (c & 0x80) != 0) << "code " << c;
  }
  EXPECT_EQ(e4m3_to_float(0x7E), 448.0f);
  EXPECT_EQ(e4m3_to_float(0x01), std::ldexp(1.0f, -9));
}

TEST(E4M3, AllFiniteCodesRoundTrip) {
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7F) == 0x7F) continue;  // NaN codes: there is no float that encodes back to them
    EXPECT_EQ(float_to_e4m3(e4m3_to_float(static_cast<uint8_t>(c))), c) << "code " << c;
  }
}

TEST(E4M3, NaNCodesAndNaNInput) {
  EXPECT_TRUE(std::isnan(e4m3_to_float(0x7F)));
  EXPECT_TRUE(std::isnan(e4m3_to_float(0xFF)));
  EXPECT_EQ(float_to_e4m3(std::numeric_limits<float>::quiet_NaN()) & 0x7F, 0x7F);
}

// For every pair of adjacent positive E4M3 values: just below the midpoint, the midpoint (tie to
// the even code) and just above, for both signs.
TEST(E4M3, EveryRoundingBoundaryBothSidesAndTie) {
  for (int c = 0; c < 0x7E; ++c) {
    const double lo = e4m3_definition(c), hi = e4m3_definition(c + 1);
    const float mid = static_cast<float>((lo + hi) / 2);  // <= 5 significant bits: exact
    ASSERT_EQ(static_cast<double>(mid), (lo + hi) / 2);
    const float below = std::nextafter(mid, 0.0f), above = std::nextafter(mid, 1000.0f);
    const int even = (c % 2 == 0) ? c : c + 1;
    EXPECT_EQ(float_to_e4m3(below), c) << "below midpoint of " << c;
    EXPECT_EQ(float_to_e4m3(mid), even) << "tie between " << c << " and " << c + 1;
    EXPECT_EQ(float_to_e4m3(above), c + 1) << "above midpoint of " << c;
    EXPECT_EQ(float_to_e4m3(-below), 0x80 | c);
    EXPECT_EQ(float_to_e4m3(-mid), 0x80 | even);
    EXPECT_EQ(float_to_e4m3(-above), 0x80 | (c + 1));
    // Exact values and their float neighbours stay on their code.
    EXPECT_EQ(float_to_e4m3(static_cast<float>(hi)), c + 1);
    EXPECT_EQ(float_to_e4m3(std::nextafter(static_cast<float>(hi), 0.0f)), c + 1);
  }
}

TEST(E4M3, ClampsAbove448NeverNaN) {
  for (float v : {448.0f, 449.0f, 463.99f, 464.0f, 479.99f, 480.0f, 500.0f, 1e30f,
                  std::numeric_limits<float>::max(), std::numeric_limits<float>::infinity()}) {
    EXPECT_EQ(float_to_e4m3(v), 0x7E) << v;
    EXPECT_EQ(float_to_e4m3(-v), 0xFE) << v;
  }
}

TEST(E4M3, ZerosAndTinyValues) {
  EXPECT_EQ(float_to_e4m3(0.0f), 0x00);
  EXPECT_EQ(float_to_e4m3(-0.0f), 0x80);
  EXPECT_EQ(float_to_e4m3(std::ldexp(1.0f, -10)), 0x00);             // tie 0 vs 2^-9 -> even 0
  EXPECT_EQ(float_to_e4m3(std::nextafter(std::ldexp(1.0f, -10), 1.0f)), 0x01);
  EXPECT_EQ(float_to_e4m3(std::numeric_limits<float>::denorm_min()), 0x00);
  EXPECT_EQ(float_to_e4m3(1e-30f), 0x00);
  EXPECT_EQ(float_to_e4m3(1.0f), 0x38);
}

// E2M1 grid and the spec's boundary table.
const float kE2M1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

TEST(E2M1, DecodeAllSixteenCodes) {
  for (int c = 0; c < 16; ++c) {
    const float v = e2m1_to_float(static_cast<uint8_t>(c));
    EXPECT_EQ(v, c < 8 ? kE2M1[c] : -kE2M1[c - 8]) << c;
  }
}

TEST(E2M1, BoundariesBothSidesAndTiesPerSpec) {
  struct B {
    float at;
    int below, tie, above;
  };
  // Spec: ties 0.25->0, 0.75->1, 1.25->1, 1.75->2, 2.5->2, 3.5->4, 5->4; > 5 -> 6.
  const B table[] = {{0.25f, 0, 0, 1}, {0.75f, 1, 2, 2}, {1.25f, 2, 2, 3}, {1.75f, 3, 4, 4},
                     {2.5f, 4, 4, 5},  {3.5f, 5, 6, 6},  {5.0f, 6, 6, 7}};
  for (const B& b : table) {
    const float below = std::nextafter(b.at, 0.0f), above = std::nextafter(b.at, 100.0f);
    EXPECT_EQ(float_to_e2m1(below), b.below) << b.at;
    EXPECT_EQ(float_to_e2m1(b.at), b.tie) << b.at;
    EXPECT_EQ(float_to_e2m1(above), b.above) << b.at;
    EXPECT_EQ(float_to_e2m1(-below), 8 | b.below) << -b.at;
    EXPECT_EQ(float_to_e2m1(-b.at), 8 | b.tie) << -b.at;
    EXPECT_EQ(float_to_e2m1(-above), 8 | b.above) << -b.at;
  }
  for (int i = 0; i < 8; ++i) EXPECT_EQ(float_to_e2m1(kE2M1[i]), i);
}

TEST(E2M1, SignTakenBeforeRoundingAndSaturation) {
  EXPECT_EQ(float_to_e2m1(0.0f), 0x0);
  EXPECT_EQ(float_to_e2m1(-0.0f), 0x0);  // -0.0 is not < 0
  EXPECT_EQ(float_to_e2m1(-0.1f), 0x8);  // rounds to zero but keeps the sign
  EXPECT_EQ(float_to_e2m1(-std::numeric_limits<float>::denorm_min()), 0x8);
  EXPECT_EQ(float_to_e2m1(6.0f), 0x7);
  EXPECT_EQ(float_to_e2m1(1e30f), 0x7);
  EXPECT_EQ(float_to_e2m1(-7.5f), 0xF);
  EXPECT_EQ(float_to_e2m1(std::numeric_limits<float>::infinity()), 0x7);
}

TEST(E8M0, Decode) {
  EXPECT_EQ(e8m0_to_float(127), 1.0f);
  EXPECT_EQ(e8m0_to_float(128), 2.0f);
  EXPECT_EQ(e8m0_to_float(120), 1.0f / 128);
  EXPECT_EQ(e8m0_to_float(254), std::ldexp(1.0f, 127));
  EXPECT_EQ(e8m0_to_float(1), std::ldexp(1.0f, -126));
  EXPECT_EQ(e8m0_to_float(0), std::ldexp(1.0f, -127));
  EXPECT_TRUE(std::isnan(e8m0_to_float(0xFF)));
}

TEST(E5M2, Decode) {
  // 1 sign, 5 exponent bits (bias 15), 2 mantissa bits.
  EXPECT_EQ(e5m2_to_float(0x3C), 1.0f);
  EXPECT_EQ(e5m2_to_float(0x3D), 1.25f);
  EXPECT_EQ(e5m2_to_float(0xC0), -2.0f);
  EXPECT_EQ(e5m2_to_float(0x7B), 57344.0f);  // max finite
  EXPECT_EQ(e5m2_to_float(0x01), std::ldexp(1.0f, -16));
  EXPECT_TRUE(std::isinf(e5m2_to_float(0x7C)));
  EXPECT_TRUE(std::isnan(e5m2_to_float(0x7E)));
}

TEST(BF16, DecodeAndRoundToNearestEven) {
  EXPECT_EQ(bf16_to_float(0x3F80), 1.0f);
  EXPECT_EQ(bf16_to_float(0xC040), -3.0f);
  EXPECT_EQ(float_to_bf16(1.0f), 0x3F80);
  // 1 + 2^-8 is the tie between 1 (0x3F80) and 1 + 2^-7 (0x3F81): even -> 0x3F80.
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -7) + std::ldexp(1.0f, -8)), 0x3F82);
  EXPECT_EQ(float_to_bf16(std::nextafter(1.0f + std::ldexp(1.0f, -8), 2.0f)), 0x3F81);
  EXPECT_EQ(float_to_bf16(from_bits(0x7F7FFFFF)), 0x7F80);  // rounds up to Inf
  EXPECT_EQ(float_to_bf16(-0.0f), 0x8000);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float f = bf16_to_float(static_cast<uint16_t>(b));
    if (std::isnan(f)) continue;
    ASSERT_EQ(float_to_bf16(f), b);
  }
}

TEST(FP16, DecodeEncodeAgainstDefinition) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    const float v = fp16_to_float(static_cast<uint16_t>(h));
    if (e == 31) {
      EXPECT_TRUE(m ? std::isnan(v) : std::isinf(v)) << h;
      continue;
    }
    const double mag = e == 0 ? std::ldexp(m, -24) : std::ldexp(1.0 + m / 1024.0, e - 15);
    ASSERT_EQ(static_cast<double>(v), s ? -mag : mag) << h;
    ASSERT_EQ(float_to_fp16(v), h) << h;
  }
  // Ties: 1 + 2^-11 lies between 1 and 1 + 2^-10 -> even (1.0 = 0x3C00).
  EXPECT_EQ(float_to_fp16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);
  EXPECT_EQ(float_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
  EXPECT_EQ(float_to_fp16(65519.0f), 0x7BFF);
  EXPECT_EQ(float_to_fp16(65520.0f), 0x7C00);
  EXPECT_EQ(float_to_fp16(std::ldexp(1.0f, -25)), 0x0000);                     // tie -> 0
  EXPECT_EQ(float_to_fp16(std::ldexp(3.0f, -25)), 0x0002);                     // tie -> even 2
  EXPECT_EQ(float_to_fp16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(float_to_fp16(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -25)), 0x0400);  // tie up to normal
}

}  // namespace
}  // namespace fp4kit
