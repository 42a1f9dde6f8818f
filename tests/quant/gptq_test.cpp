// GPTQ with fixed NVFP4 block scales: with no correlation between channels (diagonal X^T X) it is
// exactly round-to-nearest with those scales; with correlated inputs it lowers the layer-output
// error tr(dW H dW^T) (float64 recomputation); a degenerate X^T X leaves the codes alone, never
// zeroes a weight.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/quant/gptq.hpp"

namespace fp4kit {
namespace {

struct Case {
  size_t rows = 24, cols = 64;
  std::vector<float> w;
  float s2 = 0;
  std::vector<uint8_t> packed, scales;
};

Case make_case(uint64_t seed) {
  Case c;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n01;
  c.w.resize(c.rows * c.cols);
  float amax = 0;
  for (float& x : c.w) amax = std::max(amax, std::fabs(x = n01(rng)));
  c.s2 = nvfp4_global_scale(amax);
  c.packed.resize(c.rows * c.cols / 2);
  c.scales.resize(c.rows * c.cols / 16);
  nvfp4_quantize(c.w.data(), DType::F32, c.rows, c.cols, c.s2, c.packed.data(), c.scales.data());
  return c;
}

SourceView view(const Case& c) {
  return {reinterpret_cast<const uint8_t*>(c.w.data()), DType::F32, c.rows, c.cols};
}

double layer_error(const Case& c, const std::vector<uint8_t>& packed, const std::vector<double>& h) {
  std::vector<float> dq(c.w.size());
  nvfp4_dequantize(packed.data(), c.scales.data(), c.rows, c.cols, c.s2, dq.data());
  double t = 0;
  for (size_t r = 0; r < c.rows; ++r)
    for (size_t a = 0; a < c.cols; ++a)
      for (size_t b = 0; b < c.cols; ++b)
        t += (double(c.w[r * c.cols + a]) - dq[r * c.cols + a]) * h[a * c.cols + b] *
             (double(c.w[r * c.cols + b]) - dq[r * c.cols + b]);
  return t;
}

TEST(Gptq, DiagonalHessianIsRoundToNearest) {
  const Case c = make_case(1);
  std::vector<double> h(c.cols * c.cols, 0.0);
  for (size_t i = 0; i < c.cols; ++i) h[i * c.cols + i] = 1.0 + i;
  std::vector<uint8_t> p(c.packed.size(), 0xAA);
  EXPECT_EQ(gptq_encode(view(c), c.s2, c.scales.data(), h, {}, p.data()), "");
  EXPECT_EQ(p, c.packed);
}

TEST(Gptq, CorrelatedInputsLowerTheLayerError) {
  const Case c = make_case(2);
  std::mt19937_64 rng(3);
  std::normal_distribution<double> n01;
  std::vector<double> h(c.cols * c.cols, 0.0);
  for (int t = 0; t < 400; ++t) {  // inputs with a strong common component
    std::vector<double> x(c.cols);
    const double common = n01(rng);
    for (size_t i = 0; i < c.cols; ++i) x[i] = n01(rng) * 0.3 + common * (1 + (i % 3));
    for (size_t a = 0; a < c.cols; ++a)
      for (size_t b = 0; b < c.cols; ++b) h[a * c.cols + b] += x[a] * x[b];
  }
  std::vector<uint8_t> p(c.packed.size());
  ASSERT_EQ(gptq_encode(view(c), c.s2, c.scales.data(), h, {}, p.data()), "");
  EXPECT_NE(p, c.packed);
  EXPECT_LT(layer_error(c, p, h), 0.7 * layer_error(c, c.packed, h));
}

TEST(Gptq, DegenerateHessianLeavesTheCodesAlone) {
  const Case c = make_case(4);
  std::vector<uint8_t> p = c.packed;
  const std::vector<double> zero(c.cols * c.cols, 0.0);
  EXPECT_NE(gptq_encode(view(c), c.s2, c.scales.data(), zero, {}, p.data()), "");
  EXPECT_EQ(p, c.packed);
  std::vector<double> neg(c.cols * c.cols, 0.0);  // not positive definite even after dampening
  for (size_t i = 0; i < c.cols; ++i) neg[i * c.cols + i] = i == 5 ? -1e6 : 1.0;
  EXPECT_NE(gptq_encode(view(c), c.s2, c.scales.data(), neg, {}, p.data()), "");
  EXPECT_EQ(p, c.packed);
}

}  // namespace
}  // namespace fp4kit
