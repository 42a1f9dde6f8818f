// Plans of the real stories260K checkpoints in ../shared/data (tensor counts from the data
// README: 5 layers, hidden 64, 4 experts; llama down_proj K = 172; tied embeddings).
#include <gtest/gtest.h>

#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/model/config.hpp"
#include "plan/plan_test_util.hpp"
#include "support/shared_data.hpp"

namespace fp4kit {
namespace {

using namespace fp4kit::testing;

Plan plan_of(const std::filesystem::path& dir) {
  auto ckpt = Checkpoint::open(dir);
  ModelConfig config = ModelConfig::parse(ckpt->config(), (dir / "config.json").string());
  Plan p = build_plan(*ckpt, config, {});
  EXPECT_EQ(p.entries.size(), ckpt->tensor_names().size());  // nothing split, nothing lost
  return p;
}

std::vector<std::string> routers(const std::string& name_in_layer) {
  std::vector<std::string> out = {"lm_head", "model.embed_tokens"};
  for (int l = 0; l < 5; ++l)
    out.push_back("model.layers." + std::to_string(l) + "." + name_in_layer);
  return out;
}

TEST(RealCheckpoints, StoriesLlama) {
  FP4KIT_REQUIRE_SHARED(dir, "models/stories260k-llama");
  Plan p = plan_of(dir);
  EXPECT_EQ(p.family, "llama");
  EXPECT_EQ(p.entries.size(), 47u);
  EXPECT_EQ(count_action(p, Action::Quantize), 30u);  // q k v o gate up, 5 layers
  for (int l = 0; l < 5; ++l) {
    const std::string down = "model.layers." + std::to_string(l) + ".mlp.down_proj";
    EXPECT_EQ(ENTRY(p, down + ".weight").reason, "K=172 not a multiple of 16");
    EXPECT_TRUE(any_contains(p.warnings, down));
  }
  EXPECT_EQ(p.exclude_modules, (std::vector<std::string>{
                                   "lm_head", "model.embed_tokens", "model.layers.0.mlp.down_proj",
                                   "model.layers.1.mlp.down_proj", "model.layers.2.mlp.down_proj",
                                   "model.layers.3.mlp.down_proj", "model.layers.4.mlp.down_proj"}));
  const PlanEntry& k = ENTRY(p, "model.layers.3.self_attn.k_proj");
  EXPECT_EQ(k.rows, 32u);
  EXPECT_EQ(k.cols, 64u);
  EXPECT_EQ(member_names(p, k.weight_group).size(), 3u);
}

TEST(RealCheckpoints, StoriesMixtral) {
  for (const char* name : {"models/stories260k-mixtral", "models/stories260k-mixtral-routed"}) {
    FP4KIT_REQUIRE_SHARED(dir, name);
    Plan p = plan_of(dir);
    EXPECT_EQ(p.family, "mixtral");
    EXPECT_EQ(p.entries.size(), 97u);
    EXPECT_EQ(count_action(p, Action::Quantize), 80u) << name;  // 4 attn + 4 x 3 experts
    EXPECT_EQ(p.exclude_modules, routers("block_sparse_moe.gate"));
    for (int l = 0; l < 5; ++l) {
      const std::string x = "model.layers." + std::to_string(l) + ".block_sparse_moe.experts.";
      const PlanEntry& w1 = ENTRY(p, x + "2.w1");
      EXPECT_EQ(member_names(p, w1.weight_group),
                (std::vector<std::string>{x + "2.w1", x + "2.w3"}));
      EXPECT_EQ(member_names(p, w1.input_group).size(), 8u);
      EXPECT_EQ(member_names(p, ENTRY(p, x + "0.w2").input_group).size(), 4u);
    }
    EXPECT_TRUE(p.warnings.empty());
  }
}

TEST(RealCheckpoints, StoriesQwen2Moe) {
  FP4KIT_REQUIRE_SHARED(dir, "models/stories260k-qwen2moe");
  Plan p = plan_of(dir);
  EXPECT_EQ(p.family, "qwen2_moe");
  EXPECT_EQ(p.entries.size(), 132u);
  EXPECT_EQ(count_action(p, Action::Quantize), 95u);  // 4 attn + 12 experts + 3 shared, x5
  std::vector<std::string> expected = routers("mlp.gate");
  for (int l = 0; l < 5; ++l)
    expected.push_back("model.layers." + std::to_string(l) + ".mlp.shared_expert_gate");
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(p.exclude_modules, expected);
  const PlanEntry& sg = ENTRY(p, "model.layers.4.mlp.shared_expert.gate_proj");
  EXPECT_EQ(member_names(p, sg.input_group).size(), 10u);  // 4 experts x 2 + shared gate/up
  EXPECT_EQ(ENTRY(p, "model.layers.4.mlp.shared_expert.down_proj").cols, 16u);
  EXPECT_EQ(ENTRY(p, "model.layers.0.self_attn.q_proj.bias").action, Action::Keep);
}

TEST(RealCheckpoints, StoriesQwen3Moe) {
  FP4KIT_REQUIRE_SHARED(dir, "models/stories260k-qwen3moe");
  Plan p = plan_of(dir);
  EXPECT_EQ(p.family, "qwen3_moe");
  EXPECT_EQ(p.entries.size(), 107u);  // per layer 4 norms + 4 attn + router + 12 experts
  EXPECT_EQ(count_action(p, Action::Quantize), 80u);
  EXPECT_EQ(p.exclude_modules, routers("mlp.gate"));
  EXPECT_EQ(ENTRY(p, "model.layers.2.self_attn.q_norm.weight").action, Action::Keep);
  EXPECT_NO_THROW(validate_exclude_list(p));
}

}  // namespace
}  // namespace fp4kit
