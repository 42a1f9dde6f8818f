// The repack into llama.cpp's block_nvfp4 against ggml-quants.c's dequantize_row_nvfp4 as its
// source defines it (re-implemented here from that definition): every code and scale byte, row
// permutation, and the refused scale bytes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "fp4kit/error.hpp"
#include "fp4kit/numeric/ggml_nvfp4.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "support/error_of.hpp"

namespace fp4kit {
namespace {

// ggml-impl.h ggml_ue4m3_to_fp32 (with its 0.5 factor) and ggml-common.h kvalues_fp4.
float ue4m3(uint8_t x) {
  if (x == 0 || x == 0x7F) return 0.0f;
  const int exp = (x >> 3) & 0xF, man = x & 7;
  const float raw = exp ? (1.0f + man / 8.0f) * std::ldexp(1.0f, exp - 7) : man * std::ldexp(1.0f, -9);
  return raw * 0.5f;
}
const int8_t kvalues[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

std::vector<float> ggml_dequantize(const uint8_t* x, uint64_t rows, uint64_t cols) {
  std::vector<float> y(rows * cols);
  for (uint64_t i = 0; i < rows * cols / 64; ++i, x += 36)
    for (int s = 0; s < 4; ++s) {
      const float d = ue4m3(x[s]);
      float* yb = y.data() + i * 64 + s * 16;
      for (int j = 0; j < 8; ++j) {
        yb[j] = kvalues[x[4 + s * 8 + j] & 0x0F] * d;
        yb[j + 8] = kvalues[x[4 + s * 8 + j] >> 4] * d;
      }
    }
  return y;
}

TEST(GgmlNvfp4, RepackDecodesToTheSameValuesForEveryCodeAndScale) {
  const uint64_t rows = 64, cols = 128;
  std::mt19937 rng(7);
  std::vector<uint8_t> packed(rows * cols / 2), scales(rows * cols / 16);
  for (auto& b : packed) b = static_cast<uint8_t>(rng());
  for (size_t i = 0; i < scales.size(); ++i)  // every non-negative finite E4M3 byte, 0 included
    scales[i] = static_cast<uint8_t>(i % 0x7F);
  std::vector<uint8_t> out(rows * cols / 64 * 36);
  repack_nvfp4_to_ggml(packed.data(), scales.data(), rows, cols, out.data());
  std::vector<float> want(rows * cols);
  nvfp4_dequantize(packed.data(), scales.data(), rows, cols, 1.0f, want.data());
  const auto got = ggml_dequantize(out.data(), rows, cols);
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_EQ(got[i], want[i] + 0.0f) << "element " << i;  // ggml's code 8 is +0, ModelOpt's -0

  // Rows permuted: output row r is source row row_of[r].
  std::vector<uint64_t> row_of(rows);
  for (uint64_t r = 0; r < rows; ++r) row_of[r] = (r * 7 + 3) % rows;
  std::vector<uint8_t> perm(out.size());
  repack_nvfp4_to_ggml(packed.data(), scales.data(), rows, cols, perm.data(), row_of.data());
  const uint64_t row_bytes = cols / 64 * 36;
  for (uint64_t r = 0; r < rows; ++r)
    ASSERT_EQ(std::memcmp(perm.data() + r * row_bytes, out.data() + row_of[r] * row_bytes,
                          row_bytes),
              0);
}

TEST(GgmlNvfp4, SignBitIsClearAndBadScalesAreRefused) {
  std::vector<uint8_t> packed(32, 0x21), scales(4, 0x38), out(36);
  scales[1] = 0x80;  // -0: written as 0
  repack_nvfp4_to_ggml(packed.data(), scales.data(), 1, 64, out.data());
  EXPECT_EQ(out[0], 0x38);
  EXPECT_EQ(out[1], 0x00);
  scales[2] = 0xB8;  // -1.0
  EXPECT_THAT(testing::error_of([&] {
                repack_nvfp4_to_ggml(packed.data(), scales.data(), 1, 64, out.data());
              }),
              ::testing::HasSubstr("scale byte 0xB8 is negative"));
  scales[2] = 0x7F;
  EXPECT_THAT(testing::error_of([&] {
                repack_nvfp4_to_ggml(packed.data(), scales.data(), 1, 64, out.data());
              }),
              ::testing::HasSubstr("0x7F is NaN"));
  EXPECT_THAT(testing::error_of([&] {
                repack_nvfp4_to_ggml(packed.data(), scales.data(), 1, 48, out.data());
              }),
              ::testing::HasSubstr("multiple of 64"));
}

}  // namespace
}  // namespace fp4kit
