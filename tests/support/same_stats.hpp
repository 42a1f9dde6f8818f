#pragma once
// Bit-for-bit equality of two DistortionStats (the statistics measured while encoding against
// nvfp4_distortion's second pass).
#include <gtest/gtest.h>

#include <string>

#include "fp4kit/numeric/distortion.hpp"

namespace fp4kit::test {

inline void expect_same_stats(const DistortionStats& want, const DistortionStats& got,
                              const std::string& what) {
  EXPECT_EQ(want.count, got.count) << what;
  EXPECT_EQ(want.sum_sq_ref, got.sum_sq_ref) << what;
  EXPECT_EQ(want.sum_sq_err, got.sum_sq_err) << what;
  EXPECT_EQ(want.max_abs_err, got.max_abs_err) << what;
  EXPECT_EQ(want.sign_flips, got.sign_flips) << what;
  EXPECT_EQ(want.rounded_to_zero, got.rounded_to_zero) << what;
}

}  // namespace fp4kit::test
