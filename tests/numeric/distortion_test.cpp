// The vectorized distortion statistics and row dequantizer against straightforward definitions.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "fp4kit/numeric/distortion.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/nvfp4.hpp"

namespace fp4kit {
namespace {

TEST(Distortion, MatchesDirectDefinition) {
  const size_t rows = 37, cols = 160;
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<uint16_t> src(rows * cols);
  for (size_t i = 0; i < src.size(); ++i) {
    float v = n(rng) * (i % 97 == 0 ? 30.0f : 1.0f);
    if (i % 13 == 0) v *= 1e-3f;  // values that round to zero
    if (i % 41 == 0) v = 0.0f;
    src[i] = float_to_bf16(v);
  }
  const float s2 = nvfp4_global_scale(tensor_amax(src.data(), DType::BF16, rows, cols));
  std::vector<uint8_t> packed(rows * cols / 2), scales(rows * cols / 16);
  nvfp4_quantize_ref(src.data(), DType::BF16, rows, cols, s2, packed.data(), scales.data());

  double sref = 0, serr = 0, mx = 0;
  uint64_t flips = 0, zeros = 0;
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) {
      const size_t i = r * cols + c;
      const uint8_t code = (c & 1) ? packed[i / 2] >> 4 : packed[i / 2] & 0xF;
      const float q = e2m1_to_float(code) * e4m3_to_float(scales[r * cols / 16 + c / 16]) * s2;
      const float x = bf16_to_float(src[i]);
      sref += double(x) * x;
      serr += (double(q) - x) * (double(q) - x);
      mx = std::max(mx, std::fabs(double(q) - x));
      flips += (x > 0 && q < 0) || (x < 0 && q > 0);
      zeros += (x != 0 && q == 0);
    }
  const DistortionStats d =
      nvfp4_distortion(src.data(), DType::BF16, rows, cols, packed.data(), scales.data(), s2);
  EXPECT_EQ(d.count, rows * cols);
  EXPECT_NEAR(d.sum_sq_ref, sref, 1e-5 * sref);
  EXPECT_NEAR(d.sum_sq_err, serr, 1e-5 * serr);
  EXPECT_FLOAT_EQ(static_cast<float>(d.max_abs_err), static_cast<float>(mx));
  EXPECT_EQ(d.sign_flips, flips);
  EXPECT_EQ(d.rounded_to_zero, zeros);
  EXPECT_GT(zeros, 0u);

  std::vector<float> deq(rows * cols);
  nvfp4_dequantize(packed.data(), scales.data(), rows, cols, s2, deq.data());
  for (size_t i = 0; i < deq.size(); i += 31) {
    const size_t r = i / cols, c = i % cols;
    const uint8_t code = (c & 1) ? packed[i / 2] >> 4 : packed[i / 2] & 0xF;
    EXPECT_EQ(deq[i], e2m1_to_float(code) * e4m3_to_float(scales[r * cols / 16 + c / 16]) * s2);
  }
}

}  // namespace
}  // namespace fp4kit
