// FP8 block-scaled and MXFP4 source decoding, against values computed by hand from the format
// definitions (E4M3FN: 2^(e-7) * (1 + m/8); E2M1 grid 0, .5, 1, 1.5, 2, 3, 4, 6; E8M0 2^(b-127)).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "fp4kit/error.hpp"
#include "fp4kit/numeric/formats.hpp"
#include "fp4kit/numeric/source_formats.hpp"

namespace fp4kit {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// E4M3FN codes whose values are known by hand: 0x38 = 2^0 = 1, 0x40 = 2^1 = 2, 0x3C = 1.5,
// 0x30 = 2^-1, 0xB8 = -1, 0x7E = 2^8 * 1.75 = 448, 0x01 = 2^-6 * 1/8 = 2^-9, 0x00 = 0.
TEST(Fp8Block, SmallBlocksWithPartialEdgesHandComputed) {
  // W [3, 5] in 2x2 blocks -> grid [2, 3]; the last block row and column are partial.
  const std::vector<uint8_t> codes = {
      0x38, 0x40, 0x3C, 0x30, 0xB8,  //
      0x7E, 0x01, 0x00, 0x38, 0x38,  //
      0x40, 0xB8, 0x30, 0x3C, 0x7E,
  };
  const std::vector<float> grid = {0.5f, 2.0f, 4.0f,  //
                                   0.25f, 8.0f, 0.125f};
  Fp8BlockScales s{grid.data(), DType::F32, 2, 3, 2, 2};
  std::vector<float> out(15, -99.0f);
  fp8_block_dequantize(codes.data(), 0, 3, 3, 5, s, out.data(), "w");
  const std::vector<float> want = {
      1 * 0.5f, 2 * 0.5f, 1.5f * 2, 0.5f * 2, -1 * 4.0f,                       //
      448 * 0.5f, std::ldexp(0.5f, -9), 0.0f, 1 * 2.0f, 1 * 4.0f,             //
      2 * 0.25f, -1 * 0.25f, 0.5f * 8, 1.5f * 8, 448 * 0.125f,
  };
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(out[i], want[i]) << "element " << i;

  // Row slice starting in the second block row: row 2 only.
  std::vector<float> row(5);
  fp8_block_dequantize(codes.data() + 10, 2, 1, 3, 5, s, row.data(), "w");
  for (size_t c = 0; c < 5; ++c) EXPECT_EQ(row[c], want[10 + c]) << "column " << c;
}

TEST(Fp8Block, Default128BlocksPickTheRightScaleAtEveryEdge) {
  const size_t n = 130, k = 200;  // grid [2, 2], partial last row block (2 rows) and column (72)
  std::vector<uint8_t> codes(n * k, 0x38);  // every element 1.0: output == its block's scale
  const std::vector<float> grid = {3.0f, 5.0f, 7.0f, 11.0f};
  Fp8BlockScales s{grid.data(), DType::F32, 2, 2};
  std::vector<float> out(n * k);
  fp8_block_dequantize(codes.data(), 0, n, n, k, s, out.data(), "w");
  EXPECT_EQ(out[0 * k + 0], 3.0f);
  EXPECT_EQ(out[127 * k + 127], 3.0f);
  EXPECT_EQ(out[127 * k + 128], 5.0f);
  EXPECT_EQ(out[128 * k + 127], 7.0f);
  EXPECT_EQ(out[129 * k + 199], 11.0f);
  // A slice of rows 100..139 (crossing the block-row boundary at 128).
  std::vector<float> part(30 * k);
  fp8_block_dequantize(codes.data() + 100 * k, 100, 30, n, k, s, part.data(), "w");
  EXPECT_EQ(part[27 * k + 0], 3.0f);    // row 127
  EXPECT_EQ(part[28 * k + 0], 7.0f);    // row 128
  EXPECT_EQ(part[29 * k + 150], 11.0f);  // row 129
}

TEST(Fp8Block, AmaxEqualsTheMaxOfTheDecodedValues) {
  // Random codes (no NaN) and scales, slices crossing block rows: amax must be bit-identical to
  // max |decode|, which is computed here from the decoded output.
  const size_t n = 300, k = 272;
  std::vector<uint8_t> codes(n * k);
  uint32_t x = 12345;
  for (auto& c : codes) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<uint8_t>(x >> 24);
    if ((c & 0x7F) == 0x7F) c = 0x3F;
  }
  std::vector<float> grid(3 * 3);
  for (size_t i = 0; i < grid.size(); ++i) grid[i] = 0.001f * float(i * 7 % 9 + 1) / 3.0f;
  Fp8BlockScales s{grid.data(), DType::F32, 3, 3};
  for (auto [r0, rows] : {std::pair<size_t, size_t>{0, 300}, {100, 60}, {256, 44}, {5, 1}}) {
    std::vector<float> out(rows * k);
    fp8_block_dequantize(codes.data() + r0 * k, r0, rows, n, k, s, out.data(), "w");
    float want = 0;
    for (float v : out) want = std::max(want, std::fabs(v));
    EXPECT_EQ(fp8_block_amax(codes.data() + r0 * k, r0, rows, n, k, s, "w"), want) << r0;
  }
  codes[7 * k + 3] = 0xFF;
  EXPECT_NE(error_of([&] { fp8_block_amax(codes.data(), 0, n, n, k, s, "w"); }).find("row 7, column 3"),
            std::string::npos);
}

TEST(Fp8Block, Bf16ScaleGrid) {
  const std::vector<uint8_t> codes = {0x40, 0xB8};  // 2, -1
  const std::vector<uint16_t> grid = {0x3FC0};      // bf16 1.5
  Fp8BlockScales s{grid.data(), DType::BF16, 1, 1};
  std::vector<float> out(2);
  fp8_block_dequantize(codes.data(), 0, 1, 1, 2, s, out.data(), "w");
  EXPECT_EQ(out[0], 3.0f);
  EXPECT_EQ(out[1], -1.5f);
}

TEST(Fp8Block, BadScalesNameTensorAndBlock) {
  const std::vector<uint8_t> codes(4 * 4, 0x38);
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), 0.0f, -1.0f,
                    std::numeric_limits<float>::infinity()}) {
    std::vector<float> grid = {1, 1, 1, 1};
    grid[3] = bad;  // block [1, 1]
    Fp8BlockScales s{grid.data(), DType::F32, 2, 2, 2, 2};
    std::vector<float> out(16);
    const std::string msg =
        error_of([&] { fp8_block_dequantize(codes.data(), 0, 4, 4, 4, s, out.data(), "m.weight"); });
    EXPECT_NE(msg.find("m.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("block [1, 1]"), std::string::npos) << msg;
    const std::string msg2 = error_of([&] { check_fp8_block_scales(s, 4, 4, "x.weight_scale_inv"); });
    EXPECT_NE(msg2.find("x.weight_scale_inv"), std::string::npos) << msg2;
  }
  // -0.0 is zero too.
  std::vector<float> grid = {1, -0.0f, 1, 1};
  Fp8BlockScales s{grid.data(), DType::F32, 2, 2, 2, 2};
  EXPECT_NE(error_of([&] { check_fp8_block_scales(s, 4, 4, "t"); }).find("zero"), std::string::npos);
}

TEST(Fp8Block, ShapeMismatchAndWrongDtype) {
  std::vector<float> grid(4, 1.0f);
  // [256, 300] needs [2, 3], grid is [2, 2].
  Fp8BlockScales s{grid.data(), DType::F32, 2, 2};
  const std::string msg = error_of([&] { check_fp8_block_scales(s, 256, 300, "t.weight_scale_inv"); });
  EXPECT_NE(msg.find("needs [2, 3]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("t.weight_scale_inv"), std::string::npos) << msg;
  Fp8BlockScales s2{grid.data(), DType::F16, 1, 1};
  EXPECT_NE(error_of([&] { check_fp8_block_scales(s2, 4, 4, "t"); }).find("dtype F16"),
            std::string::npos);
  // Exactly divisible shapes need no extra block: [256, 256] is [2, 2].
  EXPECT_EQ(error_of([&] { check_fp8_block_scales(s, 256, 256, "t"); }), "");
}

TEST(Fp8Block, NaNCodeNamesRowAndColumn) {
  std::vector<uint8_t> codes(2 * 3, 0x38);
  codes[1 * 3 + 2] = 0xFF;
  std::vector<float> grid = {1.0f};
  Fp8BlockScales s{grid.data(), DType::F32, 1, 1};
  std::vector<float> out(6);
  const std::string msg =
      error_of([&] { fp8_block_dequantize(codes.data(), 0, 2, 2, 3, s, out.data(), "w8"); });
  EXPECT_NE(msg.find("row 1, column 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("w8"), std::string::npos) << msg;
}

TEST(Mxfp4, HandComputedBlocks) {
  // Two blocks of 32 codes. Block 0, scale 128 (x2): byte 0 = 0x21 -> low nibble 1 (0.5), high 2
  // (1.0); byte 1 = 0xF8 -> low 8 (-0), high 0xF (-6); byte 2 = 0x7A -> low 0xA (-1), high 7 (6).
  // Block 1, scale 125 (x 1/4): byte 0 = 0x53 -> 3 (1.5), 5 (3).
  std::vector<uint8_t> blocks(32, 0);
  blocks[0] = 0x21;
  blocks[1] = 0xF8;
  blocks[2] = 0x7A;
  blocks[16] = 0x53;
  const std::vector<uint8_t> scales = {128, 125};
  std::vector<float> out(64, -99.0f);
  mxfp4_dequantize(blocks.data(), scales.data(), 2, out.data(), "s");
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], 2.0f);
  EXPECT_EQ(out[2], 0.0f);
  EXPECT_TRUE(std::signbit(out[2]));
  EXPECT_EQ(out[3], -12.0f);
  EXPECT_EQ(out[4], -2.0f);
  EXPECT_EQ(out[5], 12.0f);
  for (size_t i = 6; i < 32; ++i) EXPECT_EQ(out[i], 0.0f) << i;
  EXPECT_EQ(out[32], 0.375f);
  EXPECT_EQ(out[33], 0.75f);
  // Every code against the E2M1 grid at scale 127 (x1).
  const float grid[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  std::vector<uint8_t> all(16);
  for (int j = 0; j < 16; ++j) all[j] = static_cast<uint8_t>((2 * j % 16) | (((2 * j + 1) % 16) << 4));
  const uint8_t one = 127;
  std::vector<float> o(32);
  mxfp4_dequantize(all.data(), &one, 1, o.data(), "s");
  for (int i = 0; i < 32; ++i) {
    const int code = i % 16;
    const float want = (code & 8) ? -grid[code & 7] : grid[code & 7];
    EXPECT_EQ(o[i], want) << "element " << i;
  }
}

TEST(Mxfp4, ExtremeScalesAndNaN) {
  std::vector<uint8_t> blocks(16, 0x22);  // every code 2 (1.0)
  uint8_t s0 = 0;
  std::vector<float> out(32);
  mxfp4_dequantize(blocks.data(), &s0, 1, out.data(), "s");
  EXPECT_EQ(out[7], std::ldexp(1.0f, -127));  // a float32 subnormal, exactly
  uint8_t nan = 0xFF;
  const std::string msg = error_of([&] { mxfp4_dequantize(blocks.data(), &nan, 1, out.data(), "x.gate_up_proj_scales"); });
  EXPECT_NE(msg.find("x.gate_up_proj_scales"), std::string::npos) << msg;
  EXPECT_NE(msg.find("block 0"), std::string::npos) << msg;
}

}  // namespace
}  // namespace fp4kit

namespace fp4kit {
namespace {

// compressed-tensors pack-quantized: element c of a row at bit c * bits of the row's
// little-endian int32 words, stored as q + 2^(bits-1).
TEST(PackedInt, Int4GroupsHandComputed) {
  // One row of k = 10 INT4 values in groups of 4 -> 2 words, 3 scales (the last group partial).
  const int q[10] = {-8, -1, 0, 7, 3, -3, 1, 2, 5, -6};
  uint32_t words[2] = {0, 0};
  for (int c = 0; c < 10; ++c) words[c / 8] |= uint32_t(q[c] + 8) << (4 * (c % 8));
  std::vector<uint8_t> bytes(8);
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(words[i / 4] >> (8 * (i % 4)));
  const float scales[3] = {0.5f, 0.25f, 3.0f};
  PackedIntScales s{scales, DType::F32, 1, 3, 4};
  std::vector<float> out(10, -99.0f);
  packed_int_dequantize(bytes.data(), 0, 1, 1, 10, 4, s, out.data(), "w", "s");
  for (int c = 0; c < 10; ++c) EXPECT_EQ(out[c], q[c] * scales[c / 4]) << "column " << c;
}

TEST(PackedInt, Int8ChannelRowSliceHandComputed) {
  // 2 rows of k = 5 INT8 values, one scale per row (channel): 2 words per row.
  const int q[2][5] = {{-128, 127, 0, -1, 64}, {1, 2, 3, 4, -5}};
  std::vector<uint8_t> bytes(16, 0);
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 5; ++c) bytes[r * 8 + c] = static_cast<uint8_t>(q[r][c] + 128);
  const float scales[2] = {0.125f, 2.0f};
  PackedIntScales s{scales, DType::F32, 2, 1, 5};
  std::vector<float> row(5);
  packed_int_dequantize(bytes.data(), 1, 1, 2, 5, 8, s, row.data(), "w", "s");  // row 1 only
  for (int c = 0; c < 5; ++c) EXPECT_EQ(row[c], q[1][c] * 2.0f) << "column " << c;
  std::vector<float> all(10);
  packed_int_dequantize(bytes.data(), 0, 2, 2, 5, 8, s, all.data(), "w", "s");
  EXPECT_EQ(all[0], -16.0f);
  EXPECT_EQ(all[1], 127 * 0.125f);
}

TEST(PackedInt, BadShapesBitsAndScalesAreRefusedByName) {
  std::vector<uint8_t> bytes(8, 0x88);
  const float ok[2] = {1.0f, 1.0f};
  std::vector<float> out(16);
  PackedIntScales s{ok, DType::F32, 1, 2, 8};
  EXPECT_NE(error_of([&] { packed_int_dequantize(bytes.data(), 0, 1, 1, 16, 3, s, out.data(), "w", "s"); })
                .find("num_bits 3"), std::string::npos);
  EXPECT_NE(error_of([&] { check_packed_int(s, 4, 2, 1, 24, "w", "s"); })
                .find("'w': 2 int32 words per row, but 24 columns of 4 bits need 3"),
            std::string::npos);
  PackedIntScales wrong{ok, DType::F32, 1, 2, 4};  // 16 columns in groups of 4 need 4 scales
  EXPECT_NE(error_of([&] { packed_int_dequantize(bytes.data(), 0, 1, 1, 16, 4, wrong, out.data(), "w", "sc"); })
                .find("'sc': shape [1, 2]"), std::string::npos);
  const float bad[2] = {1.0f, std::numeric_limits<float>::quiet_NaN()};
  PackedIntScales nan{bad, DType::F32, 1, 2, 8};
  EXPECT_NE(error_of([&] { packed_int_dequantize(bytes.data(), 0, 1, 1, 16, 4, nan, out.data(), "w", "sc"); })
                .find("scale [0, 1] is nan"), std::string::npos);
}

}  // namespace
}  // namespace fp4kit
