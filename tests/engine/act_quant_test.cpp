// W4A4 activation simulation against hand-computed blocks (definition in act_quant.hpp:
// sf = e4m3(gs * vmax / 6), os = 1 / (sf / gs), q = e2m1(clamp(x * os)), x' = q * sf / gs).
#include <gtest/gtest.h>

#include <vector>

#include "fp4kit/engine/act_quant.hpp"
#include "fp4kit/error.hpp"

namespace fp4kit::engine {
namespace {

TEST(ActivationQuant, HandComputedBlocks) {
  // input_scale = 12 / 2688 = 1/224, i.e. gs = 224 (calibrated amax 12).
  const float gs = 224.0f;
  std::vector<float> x = {
      // block 0: vmax 12 -> sf = e4m3(224 * 2) = 448, os = 1/(448/224) = 0.5, x' = q * 2
      12.0f, -6.0f, 3.0f, 1.5f, 0.75f, 0.7f, 0.2f, -0.26f, 0, 0, 0, 0, 0, 0, 0, 1.0f,
      // block 1: vmax 0.1 -> 224 * 0.1/6 = 3.7333 -> e4m3 3.75; os = 224/3.75 = 59.733;
      // x * os = 5.973, 2.987, -1.195, 0.2987, 0, ... -> q = 6, 3, -1, 0.5 (0.2987 > 0.25)
      0.1f, 0.05f, -0.02f, 0.005f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  nvfp4_fake_quant_activations(x.data(), 1, 32, gs);
  // block 0, x * 0.5 = 6, -3, 1.5, 0.75 (tie -> 1), 0.375 -> 0.5, 0.35 -> 0.5, 0.1 -> 0,
  // -0.13 -> -0, 0.5 -> 0.5; times 2.
  const std::vector<float> want0 = {12, -6, 3, 2, 1, 1, 0, -0.0f, 0, 0, 0, 0, 0, 0, 0, 1};
  for (int i = 0; i < 16; ++i) EXPECT_EQ(x[i], want0[i]) << i;
  const double d = 3.75 / 224.0;
  const std::vector<double> want1 = {6 * d, 3 * d, -1 * d, 0.5 * d};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(x[16 + i], want1[i], 3e-7 * std::abs(want1[i])) << i;
  for (int i = 20; i < 32; ++i) EXPECT_EQ(x[i], 0.0f);
}

TEST(ActivationQuant, BlockAboveCalibratedAmaxSaturatesAtScale448) {
  // gs = 224 means amax 12 maps to scale 448; a block with vmax 24 would need 896: the scale
  // clamps to 448 and values clip at 6 * 2 = 12.
  std::vector<float> x(16, 0.0f);
  x[0] = 24.0f;
  x[1] = -13.0f;
  x[2] = 5.0f;  // 5 * 0.5 = 2.5 -> tie to 2 -> 4
  nvfp4_fake_quant_activations(x.data(), 1, 16, 224.0f);
  EXPECT_EQ(x[0], 12.0f);
  EXPECT_EQ(x[1], -12.0f);
  EXPECT_EQ(x[2], 4.0f);
}

TEST(ActivationQuant, RejectsWidthNotMultipleOf16) {
  std::vector<float> x(20, 1.0f);
  EXPECT_THROW(nvfp4_fake_quant_activations(x.data(), 1, 20, 1.0f), Error);
}

}  // namespace
}  // namespace fp4kit::engine
