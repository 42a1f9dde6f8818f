// `fp4kit calibrate` end to end on the real stories260K checkpoints.
#include <gtest/gtest.h>

#include "fp4kit/io/stats_file.hpp"
#include "support/run_command.hpp"
#include "support/shared_data.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

using testing::quote;
using testing::run_command;

TEST(CalibrateCli, RoutedMixtralWritesStatsWithConsistentCounts) {
  FP4KIT_REQUIRE_SHARED(model, "models/stories260k-mixtral-routed");
  FP4KIT_REQUIRE_SHARED(data, "text/tinystories_val.stories260k.u16");
  testing::TempDir tmp;
  const auto out = tmp / "stats.safetensors";
  const auto r = run_command(testing::fp4kit_binary() + " calibrate " + quote(model.string()) +
                             " --data " + quote(data.string()) +
                             " --samples 6 --seq-len 128 --threads 2 -o " + quote(out.string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("6 samples x 128 tokens = 768 tokens"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("memory: resident (hidden states of all 768 tokens"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("tokens/s"), std::string::npos);
  const auto st = read_stats_file(out);
  EXPECT_EQ(st.metadata.at("tokens"), "768");
  EXPECT_EQ(st.metadata.at("all_experts"), "false");
  for (int l = 0; l < 5; ++l) {
    int64_t sum = 0;
    for (int e = 0; e < 4; ++e)
      sum += st.routed_tokens.at("model.layers." + std::to_string(l) +
                                 ".block_sparse_moe.experts." + std::to_string(e));
    EXPECT_EQ(sum, 2 * 768) << "layer " << l;
  }
  for (const auto& [m, a] : st.input_amax) EXPECT_GT(a, 0.0f) << m;
}

TEST(CalibrateCli, TextDataUsesTheModelTokenizer) {
  FP4KIT_REQUIRE_SHARED(model, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(data, "text/tinystories_val.txt");
  testing::TempDir tmp;
  const auto out = tmp / "stats.safetensors";
  const auto r = run_command(testing::fp4kit_binary() + " calibrate " + quote(model.string()) +
                             " --data " + quote(data.string()) +
                             " --samples 4 --seq-len 64 -o " + quote(out.string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto st = read_stats_file(out);
  EXPECT_EQ(st.input_amax.size(), 35u);
  EXPECT_EQ(st.token_count.at("model.layers.4.mlp.down_proj"), 256);
}

TEST(CalibrateCli, MissingDataFileIsAnError) {
  FP4KIT_REQUIRE_SHARED(model, "models/stories260k-llama");
  testing::TempDir tmp;
  const auto r = run_command(testing::fp4kit_binary() + " calibrate " + quote(model.string()) +
                             " --data " + quote((tmp / "nope.u16").string()) + " -o " +
                             quote((tmp / "s.safetensors").string()));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("nope.u16"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(tmp / "s.safetensors"));
  const auto usage = run_command(testing::fp4kit_binary() + " calibrate " + quote(model.string()));
  EXPECT_EQ(usage.exit_code, 2) << usage.output;
}

}  // namespace
}  // namespace fp4kit
