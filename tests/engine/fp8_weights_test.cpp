// The engine (calibrate / eval) reads FP8 block-scaled linears (DeepSeek-V3 / Qwen3-FP8) as
// fp8 * scale_inv of their 128x128 block; values computed by hand from the E4M3 definition.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "fp4kit/engine/weights.hpp"
#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/safetensors_writer.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit::engine {
namespace {

TEST(EngineFp8, BlockScaledLinearDecodesWithItsScales) {
  testing::TempDir tmp;
  const uint64_t n = 130, k = 144;  // grid [2, 2], partial edge blocks
  std::vector<uint8_t> codes(n * k, 0x38);  // 1.0
  codes[129 * k + 143] = 0xC0;              // -2.0
  const std::vector<float> grid = {0.5f, 3.0f, 0.25f, 8.0f};
  std::vector<uint8_t> gb(16);
  std::memcpy(gb.data(), grid.data(), 16);
  const std::string w = "model.layers.0.self_attn.o_proj.weight";
  {
    CheckpointWriter out(tmp.path(), {{w, DType::F8_E4M3, {n, k}}, {w + "_scale_inv", DType::F32, {2, 2}}});
    out.write(w, codes);
    out.write(w + "_scale_inv", gb);
    out.finish();
  }
  auto c = Checkpoint::open(tmp.path());
  LinearRef ref{"model.layers.0.self_attn.o_proj", "", 0, n, k};
  const LinearWeights L = load_linear(*c, ref, false);
  ASSERT_EQ(L.w.size(), n * k);
  EXPECT_EQ(L.w[0], 0.5f);
  EXPECT_EQ(L.w[127 * k + 128], 3.0f);
  EXPECT_EQ(L.w[128 * k + 0], 0.25f);
  EXPECT_EQ(L.w[129 * k + 142], 8.0f);
  EXPECT_EQ(L.w[129 * k + 143], -16.0f);
  EXPECT_FALSE(L.nvfp4);
}

TEST(EngineFp8, WrongGridIsAnError) {
  testing::TempDir tmp;
  std::vector<uint8_t> codes(256 * 256, 0x38), gb(4);
  const float one = 1.0f;
  std::memcpy(gb.data(), &one, 4);
  const std::string w = "model.layers.0.mlp.down_proj.weight";
  {
    CheckpointWriter out(tmp.path(), {{w, DType::F8_E4M3, {256, 256}}, {w + "_scale_inv", DType::F32, {1, 1}}});
    out.write(w, codes);
    out.write(w + "_scale_inv", gb);
    out.finish();
  }
  auto c = Checkpoint::open(tmp.path());
  LinearRef ref{"model.layers.0.mlp.down_proj", "", 0, 256, 256};
  try {
    load_linear(*c, ref, false);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("weight_scale_inv"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace fp4kit::engine
