// float_to_e4m3 against the CUDA toolkit's own conversion (__nv_cvt_float_to_fp8 with
// __NV_SATFINITE, __NV_E4M3, host path of cuda_fp8.h): >= 10^7 random floats of every magnitude,
// every rounding boundary, and every bf16 and fp16 value.
// SATFINITE saturates |x| >= 480 (and Inf) to 0x7E/0xFE, exactly what fp4kit's clamp to 448 gives;
// PyTorch's cast would give NaN there instead (spec section 1).
#include <gtest/gtest.h>

#ifdef FP4KIT_HAVE_CUDA_FP8
#include <cuda_fp8.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "fp4kit/numeric/formats.hpp"

namespace fp4kit {
namespace {

uint8_t cuda_e4m3(float x) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
}
float from_bits(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

TEST(E4M3CudaOracle, TenMillionRandomFloats) {
  std::mt19937_64 rng(20261126);
  long mismatches = 0, n = 0;
  for (int i = 0; i < 10'000'000; ++i) {
    float x;
    if (i % 4 == 0) {
      // Any bit pattern (all exponents, float subnormals), NaN excluded.
      x = from_bits(static_cast<uint32_t>(rng()));
      if (std::isnan(x)) continue;
    } else {
      // Concentrated where E4M3 has codes: |x| in [2^-12, 2^10), random mantissa and sign.
      const uint32_t exp = 127 - 12 + static_cast<uint32_t>(rng() % 22);
      x = from_bits((static_cast<uint32_t>(rng()) & 0x807FFFFFu) | (exp << 23));
    }
    ++n;
    const uint8_t want = cuda_e4m3(x), got = float_to_e4m3(x);
    if (want != got && ++mismatches <= 10)
      ADD_FAILURE() << "x = " << x << " cuda " << int(want)
                    << " fp4kit " << int(got);
  }
  EXPECT_EQ(mismatches, 0);
  EXPECT_GT(n, 9'900'000);
}

TEST(E4M3CudaOracle, EveryBoundaryBothSidesAndTie) {
  long checked = 0;
  for (int c = 0; c < 0x7E; ++c) {
    // Adjacent codes from the CUDA decoder itself, so no fp4kit value enters the expectation.
    __nv_fp8_e4m3 a, b;
    a.__x = static_cast<__nv_fp8_storage_t>(c);
    b.__x = static_cast<__nv_fp8_storage_t>(c + 1);
    const float va = static_cast<float>(a), vb = static_cast<float>(b);
    const float mid = static_cast<float>((static_cast<double>(va) + vb) / 2);
    for (float x : {va, vb, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f),
                    std::nextafter(va, 1e9f), std::nextafter(vb, 0.0f)}) {
      ASSERT_EQ(float_to_e4m3(x), cuda_e4m3(x)) << "x = " << x << " near code " << c;
      ASSERT_EQ(float_to_e4m3(-x), cuda_e4m3(-x)) << "x = " << -x << " near code " << c;
      checked += 2;
    }
  }
  // Saturation region: [448, 480) rounds to 448 under RNE; >= 480 and Inf saturate under
  // SATFINITE; fp4kit clamps first. Both must give 0x7E / 0xFE.
  for (float x : {448.0f, 464.0f, std::nextafter(480.0f, 0.0f), 480.0f, 481.0f, 1e6f,
                  std::numeric_limits<float>::max(), std::numeric_limits<float>::infinity()}) {
    EXPECT_EQ(cuda_e4m3(x), 0x7E) << x;
    EXPECT_EQ(float_to_e4m3(x), 0x7E) << x;
    EXPECT_EQ(cuda_e4m3(-x), 0xFE) << x;
    EXPECT_EQ(float_to_e4m3(-x), 0xFE) << x;
  }
  EXPECT_GT(checked, 1500);
}

TEST(E4M3CudaOracle, EveryBf16AndFp16Value) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    for (float x : {bf16_to_float(static_cast<uint16_t>(b)), fp16_to_float(static_cast<uint16_t>(b))}) {
      if (std::isnan(x)) continue;
      ASSERT_EQ(float_to_e4m3(x), cuda_e4m3(x)) << "x = " << x << " from 16-bit pattern " << b;
    }
  }
}

TEST(E4M3CudaOracle, DecodeAllCodes) {
  for (int c = 0; c < 256; ++c) {
    __nv_fp8_e4m3 v;
    v.__x = static_cast<__nv_fp8_storage_t>(c);
    const float want = static_cast<float>(v), got = e4m3_to_float(static_cast<uint8_t>(c));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << c;
    } else {
      EXPECT_EQ(got, want) << c;
      EXPECT_EQ(std::signbit(got), std::signbit(want)) << c;
    }
  }
}

}  // namespace
}  // namespace fp4kit

#else
TEST(E4M3CudaOracle, SKIPPED_CudaHeadersMissing) {
  GTEST_SKIP() << "SKIPPED: cuda_fp8.h not available to this build (CUDA toolkit headers "
                  "absent, or a cross build); the E4M3 oracle test did not run";
}
#endif
