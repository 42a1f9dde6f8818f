// gpt-oss's pieces of the engine, against values worked by hand from transformers'
// modeling_gpt_oss.py: attention sinks (softmax over [scores, sink], sink dropped), the clamped
// SwiGLU on interleaved gate/up, and the BMM expert loader (transpose of [K, N], bias row e,
// MXFP4 blocks decoded per the OCP MX format).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "fp4kit/engine/cpu/ops.hpp"
#include "fp4kit/engine/weights.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/safetensors_writer.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

TEST(GptOssParts, AttentionSinkJoinsTheDenominatorOnly) {
  // One head, d = 1, scale 1: q = [1, 2], k = [1, -1], v = [3, 5], sink 0.
  const float q[] = {1.0f, 2.0f}, k[] = {1.0f, -1.0f}, v[] = {3.0f, 5.0f}, sink[] = {0.0f};
  float out[2];
  engine::causal_attention(q, 1, k, v, 1, 2, 1, 1, 1, 1.0f, 0, out, 1, sink);
  const double e = std::exp(1.0);
  EXPECT_NEAR(out[0], 3.0 * e / (e + 1.0), 1e-6);
  const double a = std::exp(2.0), b = std::exp(-2.0);
  EXPECT_NEAR(out[1], (3.0 * a + 5.0 * b) / (a + b + 1.0), 1e-6);
  // Window 1: token 1 sees only itself, the sink still takes its share.
  engine::causal_attention(q, 1, k, v, 1, 2, 1, 1, 1, 1.0f, 1, out, 1, sink);
  EXPECT_NEAR(out[1], 5.0 * b / (b + 1.0), 1e-6);
  // A sink far above every score takes (almost) all the weight: the output goes to 0.
  const float big[] = {50.0f};
  engine::causal_attention(q, 1, k, v, 1, 2, 1, 1, 1, 1.0f, 0, out, 1, big);
  EXPECT_NEAR(out[1], 0.0, 1e-12 + 3.0 * std::exp(2.0 - 50.0) * 2);
  // No sinks: plain softmax.
  engine::causal_attention(q, 1, k, v, 1, 2, 1, 1, 1, 1.0f, 0, out, 1, nullptr);
  EXPECT_NEAR(out[0], 3.0, 1e-6);
  EXPECT_NEAR(out[1], (3.0 * a + 5.0 * b) / (a + b), 1e-6);
}

TEST(GptOssParts, ClampedSwigluOnInterleavedGateUp) {
  const float alpha = 1.702f, limit = 7.0f;
  // Row 0: gate 10 (clamped to 7), up -9 (clamped to -7); gate -1, up 0.5 (not clamped).
  // Row 1: gate -20 (no lower clamp), up 8 (clamped to 7).
  const float gu[] = {10.0f, -9.0f, -1.0f, 0.5f, -20.0f, 8.0f, 0.0f, 3.0f};
  float out[4];
  engine::clamped_swiglu_interleaved(gu, 2, 2, alpha, limit, out);
  auto sig = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  EXPECT_NEAR(out[0], (-7.0 + 1.0) * 7.0 * sig(7.0 * 1.702), 1e-5);
  EXPECT_NEAR(out[1], (0.5 + 1.0) * -1.0 * sig(-1.702), 1e-6);
  EXPECT_NEAR(out[2], (7.0 + 1.0) * -20.0 * sig(-20.0 * 1.702), 1e-12);
  EXPECT_EQ(out[3], 0.0f);
}

std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

TEST(GptOssParts, BmmExpertLoaderTransposesAndTakesTheBiasRow) {
  testing::TempDir tmp;
  // F32 [E = 2, K = 3, N = 4]: value 100 e + 10 k + n; bias [2, 4]: 1000 e + n.
  std::vector<float> w, bias;
  for (int e = 0; e < 2; ++e)
    for (int kk = 0; kk < 3; ++kk)
      for (int n = 0; n < 4; ++n) w.push_back(100.0f * e + 10.0f * kk + n);
  for (int e = 0; e < 2; ++e)
    for (int n = 0; n < 4; ++n) bias.push_back(1000.0f * e + n);
  // MXFP4 "m2": one expert, N = 1, K = 32: byte 0 = 0x72 -> elements 0, 1 = codes 2 (1.0) and
  // 7 (6.0); byte 1 = 0x9B -> codes 0xB (-1.5) and 0x9 (-0.5); scale byte 128 -> x 2.
  std::vector<uint8_t> blocks(16, 0), scales{128};
  blocks[0] = 0x72;
  blocks[1] = 0x9B;
  {
    CheckpointWriter wr(tmp.path(), {{"m", DType::F32, {2, 3, 4}},
                                     {"m_bias", DType::F32, {2, 4}},
                                     {"m2_blocks", DType::U8, {1, 1, 1, 16}},
                                     {"m2_scales", DType::U8, {1, 1, 1}}});
    wr.write("m", f32_bytes(w));
    wr.write("m_bias", f32_bytes(bias));
    wr.write("m2_blocks", blocks);
    wr.write("m2_scales", scales);
    wr.finish();
  }
  auto c = Checkpoint::open(tmp.path());
  engine::BmmRef ref{"m", engine::BmmRef::Storage::Float, 4, 3};
  const auto L = engine::load_bmm_expert(*c, ref, 1, false);
  ASSERT_EQ(L.n, 4u);
  ASSERT_EQ(L.k, 3u);
  for (int n = 0; n < 4; ++n) {
    for (int kk = 0; kk < 3; ++kk) EXPECT_EQ(L.w[n * 3 + kk], 100.0f + 10.0f * kk + n);
    EXPECT_EQ(L.bias[n], 1000.0f + n);
  }
  engine::BmmRef ref2{"m2", engine::BmmRef::Storage::Mxfp4, 1, 32};
  const auto M = engine::load_bmm_expert(*c, ref2, 0, false);
  ASSERT_EQ(M.w.size(), 32u);
  EXPECT_EQ(M.w[0], 2.0f);
  EXPECT_EQ(M.w[1], 12.0f);
  EXPECT_EQ(M.w[2], -3.0f);
  EXPECT_EQ(M.w[3], -1.0f);
  for (int i = 4; i < 32; ++i) EXPECT_EQ(M.w[i], 0.0f);
  EXPECT_TRUE(M.bias.empty());
}

}  // namespace
}  // namespace fp4kit
