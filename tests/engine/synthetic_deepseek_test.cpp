// fp4kit-synth's DeepSeek-V3 layout (the memory benchmark's checkpoint, small dims): the engine
// reads it as deepseek_v3 with MLA on every layer, dense MLPs first, FP8 linears decoded from
// their 128 x 128 block scales, and its forward gives finite logits.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "fp4kit/engine/forward.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/model/synthetic_checkpoint.hpp"

namespace fp4kit::engine {
namespace {

TEST(SyntheticDeepseek, EngineRunsTheFp8MlaLayout) {
  const auto dir = std::filesystem::temp_directory_path() / "fp4kit-synth-deepseek-test";
  std::filesystem::remove_all(dir);
  SyntheticMoeSpec s;
  s.model_type = "deepseek_v3";
  s.layers = 2;
  s.dense_layers = 1;
  s.hidden = 128;
  s.experts = 16;
  s.top_k = 2;
  s.moe_intermediate = 64;
  s.vocab = 64;
  write_synthetic_moe(dir, s);
  auto ckpt = Checkpoint::open(dir);
  Engine eng(*ckpt);
  const ModelSpec& S = eng.spec();
  EXPECT_EQ(S.family, Family::DeepseekV3);
  ASSERT_EQ(S.layers.size(), 2u);
  EXPECT_TRUE(S.layers[0].mla && S.layers[1].mla);
  EXPECT_FALSE(S.layers[0].moe);
  EXPECT_TRUE(S.layers[1].moe && S.layers[1].has_shared_expert);
  EXPECT_EQ(S.mla.q_lora_rank, 1536);
  EXPECT_EQ(S.mla.kv_lora_rank, 512);
  EXPECT_EQ(S.n_group, 8);
  EXPECT_EQ(S.rope.type, "yarn");
  size_t finite = 0, total = 0;
  eng.run({{1, 5, 9, 3, 7, 2}}, {}, nullptr, [&](size_t, const float* lg, size_t len, size_t v) {
    for (size_t i = 0; i < len * v; ++i) finite += std::isfinite(lg[i]) ? 1 : 0;
    total += len * v;
  });
  EXPECT_EQ(total, 6u * 64u);
  EXPECT_EQ(finite, total);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace fp4kit::engine
