// float_to_e2m1(x / d) for every finite bf16 x and several divisors d, against an oracle that
// searches the grid for the nearest value in double precision and breaks ties towards the code
// with an even mantissa bit: a different formulation from the encoder's threshold chain.
#include <gtest/gtest.h>

#include <cmath>

#include "fp4kit/numeric/formats.hpp"

namespace fp4kit {
namespace {

int e2m1_oracle(float y) {
  static const double grid[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  // Values beyond 7 are all nearest to 6; capping them keeps a - grid[i] exact in double
  // (for huge a, a - 6 == a - 0 would fake a tie).
  const double a = std::fmin(std::fabs(static_cast<double>(y)), 7.0);
  int best = 0;
  for (int i = 1; i < 8; ++i) {
    const double di = std::fabs(a - grid[i]), db = std::fabs(a - grid[best]);
    // The mantissa bit of a code is its lowest bit; on a tie prefer the code where it is 0.
    if (di < db || (di == db && (i & 1) == 0 && (best & 1) == 1)) best = i;
  }
  return (y < 0 ? 8 : 0) | best;
}

TEST(E2M1, OracleAgreesWithSpecTable) {
  // Sanity check of the oracle itself against the spec's tie list.
  EXPECT_EQ(e2m1_oracle(0.25f), 0);
  EXPECT_EQ(e2m1_oracle(0.75f), 2);
  EXPECT_EQ(e2m1_oracle(1.25f), 2);
  EXPECT_EQ(e2m1_oracle(1.75f), 4);
  EXPECT_EQ(e2m1_oracle(2.5f), 4);
  EXPECT_EQ(e2m1_oracle(3.5f), 6);
  EXPECT_EQ(e2m1_oracle(5.0f), 6);
  EXPECT_EQ(e2m1_oracle(100.0f), 7);
  EXPECT_EQ(e2m1_oracle(-0.1f), 8);
}

TEST(E2M1, EveryBf16ValueForSeveralDivisors) {
  // Divisors: exact powers of two (ties land exactly), awkward values, a tiny and a huge one,
  // and a d of the form float(e4m3) * s2 as the codec produces.
  const float divisors[] = {1.0f, 0.5f, 0.25f, 3.0f, 0.1f, 1.0f / 3.0f, 7.3e-3f, 1.1e-6f,
                            2.5e4f, 448.0f * 3.7202381e-4f, 0.001953125f * 1.1160714e-3f};
  long checked = 0;
  for (float d : divisors) {
    for (uint32_t b = 0; b < 0x10000; ++b) {
      const float x = bf16_to_float(static_cast<uint16_t>(b));
      if (!std::isfinite(x)) continue;
      const float y = x / d;
      ASSERT_EQ(float_to_e2m1(y), e2m1_oracle(y)) << "x bits " << b << " d " << d << " y " << y;
      ++checked;
    }
  }
  EXPECT_GT(checked, 11 * 65000);
}

}  // namespace
}  // namespace fp4kit
