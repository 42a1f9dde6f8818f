// The real stories260K checkpoints in ../shared/data through `fp4kit quantize --verify full`:
// expectations from the data README (K = 172 down_proj, router names, zero shared expert, the
// Qwen3-MoE q/k scaling trick), not from fp4kit's output.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "fp4kit/io/checkpoint.hpp"
#include "support/run_command.hpp"
#include "support/shared_data.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

using testing::quote;
using testing::run_command;
using testing::TempDir;
namespace fs = std::filesystem;

testing::CommandResult quantize(const fs::path& src, const fs::path& out,
                                const std::string& extra = "") {
  return run_command(testing::quantize_command(src, out, "--weights-only --verify full " + extra));
}

nlohmann::json exclude_list(const fs::path& out) {
  std::ifstream f(out / "hf_quant_config.json");
  return nlohmann::json::parse(f)["quantization"]["exclude_modules"];
}

bool contains(const nlohmann::json& list, const std::string& s) {
  return std::find(list.begin(), list.end(), s) != list.end();
}

TEST(RealCheckpoints, DenseLlamaKeepsK172DownProjAndReportsIt) {
  FP4KIT_REQUIRE_SHARED(src, "models/stories260k-llama");
  TempDir tmp;
  const auto r = quantize(src, tmp / "out");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto q = Checkpoint::open(tmp / "out");
  for (int l = 0; l < 5; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    EXPECT_EQ(q->info(p + "mlp.down_proj.weight").dtype, DType::BF16);  // K = 172
    EXPECT_NE(r.output.find(p + "mlp.down_proj"), std::string::npos) << "reported";
    EXPECT_EQ(q->info(p + "mlp.gate_proj.weight").dtype, DType::U8);
    EXPECT_EQ(q->info(p + "self_attn.k_proj.weight").shape, (std::vector<uint64_t>{32, 32}));
  }
  const auto excl = exclude_list(tmp / "out");
  EXPECT_TRUE(contains(excl, "model.layers.0.mlp.down_proj"));
  EXPECT_TRUE(contains(excl, "lm_head"));  // tied embeddings: still listed, as ModelOpt does
  EXPECT_FALSE(q->has("lm_head.weight"));
}

TEST(RealCheckpoints, MixtralExpertsQuantizedRouterKept) {
  FP4KIT_REQUIRE_SHARED(src, "models/stories260k-mixtral-routed");
  TempDir tmp;
  const auto r = quantize(src, tmp / "out");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto q = Checkpoint::open(tmp / "out");
  for (int e = 0; e < 4; ++e) {
    const std::string x = "model.layers.3.block_sparse_moe.experts." + std::to_string(e) + ".";
    EXPECT_EQ(q->info(x + "w1.weight").dtype, DType::U8);
    EXPECT_EQ(q->info(x + "w2.weight").shape, (std::vector<uint64_t>{64, 96}));  // K = 192
    EXPECT_EQ(q->bytes(x + "w1.weight_scale_2").size(), 4u);
    EXPECT_EQ(std::vector<uint8_t>(q->bytes(x + "w1.weight_scale_2").begin(),
                                   q->bytes(x + "w1.weight_scale_2").end()),
              std::vector<uint8_t>(q->bytes(x + "w3.weight_scale_2").begin(),
                                   q->bytes(x + "w3.weight_scale_2").end()))
        << "w1/w3 of each expert share weight_scale_2";
  }
  EXPECT_EQ(q->info("model.layers.3.block_sparse_moe.gate.weight").dtype, DType::BF16);
  EXPECT_TRUE(contains(exclude_list(tmp / "out"), "model.layers.3.block_sparse_moe.gate"));
}

TEST(RealCheckpoints, Qwen2MoeZeroSharedExpertDequantizesToZero) {
  FP4KIT_REQUIRE_SHARED(src, "models/stories260k-qwen2moe");
  TempDir tmp;
  const auto r = quantize(src, tmp / "out");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto q = Checkpoint::open(tmp / "out");
  // All-zero tensor: fp4kit uses amax = 1 (spec 2), so scale bytes 0x38 and codes 0.
  const auto scales = q->bytes("model.layers.0.mlp.shared_expert.gate_proj.weight_scale");
  for (uint8_t b : scales) ASSERT_EQ(b, 0x38);
  for (uint8_t b : q->bytes("model.layers.0.mlp.shared_expert.gate_proj.weight")) ASSERT_EQ(b, 0);
  EXPECT_EQ(q->info("model.layers.0.mlp.shared_expert_gate.weight").dtype, DType::BF16);
  EXPECT_EQ(q->info("model.layers.0.self_attn.q_proj.bias").dtype, DType::BF16);
}

TEST(RealCheckpoints, Qwen3MoeTinyQkIsCaughtNotSilent) {
  // q_proj/k_proj are scaled by 2^-24 (data README): sharing s2 with v_proj (spec 3) drives their
  // block scales to the 2^-9 floor, which destroys them. verify --source must say so, and no OUT
  // may appear; excluding the q/k/v group is the way out.
  FP4KIT_REQUIRE_SHARED(src, "models/stories260k-qwen3moe");
  TempDir tmp;
  auto r = quantize(src, tmp / "out");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  // The stream stops at the first destroyed member of the group (k_proj or q_proj).
  EXPECT_NE(r.output.find("self_attn.k_proj"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(tmp / "out"));
  r = quantize(src, tmp / "out2",
               "--exclude '*.self_attn.q_proj' --exclude '*.self_attn.k_proj' "
               "--exclude '*.self_attn.v_proj'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto q = Checkpoint::open(tmp / "out2");
  EXPECT_EQ(q->info("model.layers.0.self_attn.q_proj.weight").dtype, DType::BF16);
  EXPECT_EQ(q->info("model.layers.0.mlp.experts.2.up_proj.weight").dtype, DType::U8);
}

}  // namespace
}  // namespace fp4kit
