// The NVFP4 codec against NVFP4-SPEC.md section 2: the worked example byte for byte, the measured
// edge blocks (hand computed below), s2 in both rounding forms, and the input errors.
// Every test runs both the reference and the dispatched fast path.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "fp4kit/error.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/nvfp4.hpp"

namespace fp4kit {
namespace {

uint32_t bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}
float from_bits(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

using QuantizeFn = void (*)(const void*, DType, size_t, size_t, float, uint8_t*, uint8_t*);
class Nvfp4Codec : public ::testing::TestWithParam<QuantizeFn> {};
INSTANTIATE_TEST_SUITE_P(RefAndFast, Nvfp4Codec,
                         ::testing::Values(&nvfp4_quantize_ref, &nvfp4_quantize),
                         [](const auto& info) { return info.index == 0 ? "ref" : "fast"; });

TEST(Nvfp4GlobalScale, GpuAndCpuForms) {
  // Expected bits computed with exact rational arithmetic, rounded once to float32:
  // GPU: amax * float(1/2688) (float(1/2688) = 0x39C30C31); CPU: amax / 2688.
  EXPECT_EQ(bits(nvfp4_global_scale(3.0f)), 0x3A924925u);  // the spec's value
  EXPECT_EQ(bits(nvfp4_global_scale(1.0f)), 0x39C30C31u);
  struct Case {
    uint32_t amax, gpu, cpu;
  };
  // Amaxes where the two forms differ by one ulp.
  const Case cases[] = {{0x4166EFF7, 0x3BAFF3C9, 0x3BAFF3C8},
                        {0x419644CC, 0x3BE4FB1F, 0x3BE4FB1E},
                        {0x41072B76, 0x3B4DF916, 0x3B4DF915},
                        {0x3F172CAB, 0x39665C73, 0x39665C72}};
  for (const Case& c : cases) {
    EXPECT_EQ(bits(nvfp4_global_scale(from_bits(c.amax), ScaleForm::Gpu)), c.gpu);
    EXPECT_EQ(bits(nvfp4_global_scale(from_bits(c.amax), ScaleForm::Cpu)), c.cpu);
  }
  // All-zero tensor: fp4kit uses amax = 1 (not ModelOpt's s2 = 0).
  EXPECT_EQ(bits(nvfp4_global_scale(0.0f)), 0x39C30C31u);
  EXPECT_EQ(bits(nvfp4_global_scale(0.0f, ScaleForm::Cpu)), 0x39C30C31u);
}

std::vector<uint16_t> worked_example_bf16() {
  const float v[32] = {0.1f,  -0.25f, 0.3f,   -0.5f,  0.75f,   -1.0f, 1.2f,    -1.5f,
                       1.75f, -2.0f,  2.2f,   -2.5f,  2.75f,   -0.05f, 0.0f,   3.0f,
                       0.01f, -0.02f, 0.003f, 0.04f,  -0.035f, 0.0f,  0.015f, -0.0075f,
                       0.02f, 0.025f, -0.03f, 0.005f, -0.001f, 0.0125f, -0.04f, 0.0333f};
  std::vector<uint16_t> out(32);
  for (int i = 0; i < 32; ++i) out[i] = float_to_bf16(v[i]);
  return out;
}

TEST_P(Nvfp4Codec, SpecWorkedExampleByteForByte) {
  const auto w = worked_example_bf16();
  const float amax = tensor_amax(w.data(), DType::BF16, 1, 32);
  EXPECT_EQ(amax, 3.0f);
  const float s2 = nvfp4_global_scale(amax);
  ASSERT_EQ(bits(s2), 0x3A924925u);
  std::vector<uint8_t> packed(16), scales(2);
  GetParam()(w.data(), DType::BF16, 1, 32, s2, packed.data(), scales.data());
  EXPECT_EQ(scales, (std::vector<uint8_t>{0x7E, 0x4C}));
  const std::vector<uint8_t> expected = {0x90, 0xA1, 0xC3, 0xD4, 0xE6, 0xE6, 0x87, 0x70,
                                         0xD3, 0x71, 0x0F, 0xA4, 0x65, 0x1E, 0x48, 0x6F};
  EXPECT_EQ(packed, expected);
}

TEST_P(Nvfp4Codec, EdgeBlocksSubnormalTinyAndZero) {
  // s2 = float(1/2688) (a fusion group of amax 1). Hand computation, spec order:
  // block 0: bamax 1.75e-5, s = 1.75e-5 / (6 s2) = 0.00784 = 4.01 * 2^-9 -> subnormal scale 0x04;
  //   d = 4 * 2^-9 * s2 = 2.906e-6, x/d = 6.02, -6.02, 0, 1.376, 0.344, -0.069, 2.064, 2.993
  //   -> codes 7, F, 0, 3, 1, 8, 4, 5, then zeros.
  // block 1: bamax 1.1e-6, s = 4.9e-4 < 2^-9 -> clamped to 0x01; d = 2^-9 s2 = 7.27e-7,
  //   x/d = 0.138, 0.688, -0.688, 1.514 -> codes 0, 1, 9, 3, then zeros.
  // block 2: all zero -> s = 0 -> 1.0 -> 0x38, codes 0.
  std::vector<float> row(48, 0.0f);
  const float b0[8] = {1.75e-5f, -1.75e-5f, 0.0f, 4.0e-6f, 1.0e-6f, -2.0e-7f, 6.0e-6f, 8.7e-6f};
  const float b1[4] = {1e-7f, 5e-7f, -5e-7f, 1.1e-6f};
  std::copy(b0, b0 + 8, row.begin());
  std::copy(b1, b1 + 4, row.begin() + 16);
  const float s2 = nvfp4_global_scale(1.0f);
  std::vector<uint8_t> packed(24), scales(3);
  GetParam()(row.data(), DType::F32, 1, 48, s2, packed.data(), scales.data());
  EXPECT_EQ(scales, (std::vector<uint8_t>{0x04, 0x01, 0x38}));
  const std::vector<uint8_t> expected = {0xF7, 0x30, 0x81, 0x54, 0, 0, 0, 0,  // block 0
                                         0x10, 0x39, 0, 0, 0, 0, 0, 0,        // block 1
                                         0, 0, 0, 0, 0, 0, 0, 0};             // block 2
  EXPECT_EQ(packed, expected);
}

TEST_P(Nvfp4Codec, AllZeroTensorGivesScale38AndExactZeros) {
  const size_t rows = 3, cols = 64;
  std::vector<uint16_t> w(rows * cols, 0);
  w[5] = 0x8000;  // -0.0 is still zero and encodes as code 0, not 8
  const float amax = tensor_amax(w.data(), DType::BF16, rows, cols);
  EXPECT_EQ(amax, 0.0f);
  const float s2 = nvfp4_global_scale(amax);
  std::vector<uint8_t> packed(rows * cols / 2, 0xAA), scales(rows * cols / 16, 0xAA);
  GetParam()(w.data(), DType::BF16, rows, cols, s2, packed.data(), scales.data());
  for (uint8_t s : scales) EXPECT_EQ(s, 0x38);
  for (uint8_t p : packed) EXPECT_EQ(p, 0x00);
  std::vector<float> back(rows * cols, 1.0f);
  nvfp4_dequantize(packed.data(), scales.data(), rows, cols, s2, back.data());
  for (float v : back) EXPECT_EQ(v, 0.0f);
}

TEST_P(Nvfp4Codec, TensorMaxBlockGets7E) {
  // The block holding the tensor maximum has s just under 448 -> 0x7E, and the max -> code 7.
  std::vector<float> w(32);
  for (int i = 0; i < 32; ++i) w[i] = 0.37f * (i - 13);
  const float amax = tensor_amax(w.data(), DType::F32, 2, 16);
  EXPECT_EQ(amax, 0.37f * 18);
  std::vector<uint8_t> packed(16), scales(2);
  GetParam()(w.data(), DType::F32, 2, 16, nvfp4_global_scale(amax), packed.data(), scales.data());
  EXPECT_EQ(scales[1], 0x7E);
  EXPECT_EQ(packed[15] >> 4, 0x7);
}

TEST_P(Nvfp4Codec, SameBytesFromBf16Fp16AndF32) {
  // Values exactly representable in all three formats must give identical bytes.
  const size_t rows = 4, cols = 32;
  std::vector<float> f(rows * cols);
  std::vector<uint16_t> b(rows * cols), h(rows * cols);
  for (size_t i = 0; i < f.size(); ++i) {
    f[i] = std::ldexp(static_cast<float>(static_cast<int>(i * 37 % 29) - 14), static_cast<int>(i % 7) - 3);
    b[i] = float_to_bf16(f[i]);
    h[i] = float_to_fp16(f[i]);
    ASSERT_EQ(bf16_to_float(b[i]), f[i]);
    ASSERT_EQ(fp16_to_float(h[i]), f[i]);
  }
  const float s2 = nvfp4_global_scale(tensor_amax(f.data(), DType::F32, rows, cols));
  std::vector<uint8_t> p1(rows * cols / 2), s1(rows * cols / 16), p2 = p1, s2v = s1, p3 = p1, s3 = s1;
  GetParam()(f.data(), DType::F32, rows, cols, s2, p1.data(), s1.data());
  GetParam()(b.data(), DType::BF16, rows, cols, s2, p2.data(), s2v.data());
  GetParam()(h.data(), DType::F16, rows, cols, s2, p3.data(), s3.data());
  EXPECT_EQ(p1, p2);
  EXPECT_EQ(p1, p3);
  EXPECT_EQ(s1, s2v);
  EXPECT_EQ(s1, s3);
}

void expect_error_mentions(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no fp4kit::Error thrown";
  } catch (const Error& e) {
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << " lacks " << p;
  }
}

TEST_P(Nvfp4Codec, NaNAndInfNameRowAndColumn) {
  const size_t rows = 5, cols = 48;
  std::vector<float> w(rows * cols, 0.5f);
  std::vector<uint8_t> packed(rows * cols / 2), scales(rows * cols / 16);
  auto q = GetParam();
  w[3 * cols + 17] = std::nanf("");
  w[4 * cols + 2] = INFINITY;  // a later one: the first is reported
  expect_error_mentions([&] { q(w.data(), DType::F32, rows, cols, 1e-3f, packed.data(), scales.data()); },
                        {"NaN", "row 3", "column 17"});
  expect_error_mentions([&] { tensor_amax(w.data(), DType::F32, rows, cols); },
                        {"NaN", "row 3", "column 17"});
  w[3 * cols + 17] = 0.0f;
  std::vector<uint16_t> b(rows * cols);
  for (size_t i = 0; i < w.size(); ++i) b[i] = float_to_bf16(w[i]);
  expect_error_mentions([&] { q(b.data(), DType::BF16, rows, cols, 1e-3f, packed.data(), scales.data()); },
                        {"Inf", "row 4", "column 2"});
  expect_error_mentions([&] { tensor_amax(b.data(), DType::BF16, rows, cols); },
                        {"Inf", "row 4", "column 2"});
}

TEST_P(Nvfp4Codec, ColsNotMultipleOf16IsAnError) {
  std::vector<float> w(24, 1.0f);
  std::vector<uint8_t> packed(12), scales(2);
  expect_error_mentions(
      [&] { GetParam()(w.data(), DType::F32, 1, 24, 1e-3f, packed.data(), scales.data()); },
      {"24", "multiple of 16"});
}

TEST_P(Nvfp4Codec, BadGlobalScaleIsAnError) {
  // Every value a float32 subnormal: amax * R underflows to s2 = 0.
  std::vector<float> w(16, std::ldexp(1.0f, -140));
  const float s2 = nvfp4_global_scale(tensor_amax(w.data(), DType::F32, 1, 16));
  EXPECT_EQ(s2, 0.0f);
  std::vector<uint8_t> packed(8), scales(1);
  expect_error_mentions([&] { GetParam()(w.data(), DType::F32, 1, 16, s2, packed.data(), scales.data()); },
                        {"s2", "underflows"});
  expect_error_mentions([&] { GetParam()(w.data(), DType::F32, 1, 16, NAN, packed.data(), scales.data()); },
                        {"s2", "finite"});
  expect_error_mentions([&] { GetParam()(w.data(), DType::F32, 1, 16, -1.0f, packed.data(), scales.data()); },
                        {"s2", "> 0"});
}

TEST(Nvfp4Dequantize, LoaderFormula) {
  // w = e2m1(code) * float(scale) * s2; scale 0x40 = 2.0, s2 = 0.5.
  const uint8_t packed[8] = {0x71, 0xF8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2A};
  const uint8_t scales[1] = {0x40};
  float out[16];
  nvfp4_dequantize(packed, scales, 1, 16, 0.5f, out);
  EXPECT_EQ(out[0], 0.5f);   // code 1 = 0.5
  EXPECT_EQ(out[1], 6.0f);   // code 7 = 6
  EXPECT_EQ(out[2], -0.0f);  // code 8
  EXPECT_EQ(out[3], -6.0f);  // code F
  EXPECT_EQ(out[14], -1.0f); // code A = -1
  EXPECT_EQ(out[15], 1.0f);  // code 2 = 1
}

}  // namespace
}  // namespace fp4kit
