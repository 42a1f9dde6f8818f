// `fp4kit eval` end to end on the real stories260K checkpoints.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/run_command.hpp"
#include "support/shared_data.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

using testing::quote;
using testing::run_command;

nlohmann::json run_json(const std::string& args) {
  const auto r = run_command(testing::fp4kit_binary() + " eval " + args + " --json");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return nlohmann::json::parse(r.output.substr(r.output.find('{')));
}

TEST(EvalCli, PerplexityKldAgainstItselfAndSavedBase) {
  FP4KIT_REQUIRE_SHARED(dense, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(routed, "models/stories260k-mixtral-routed");
  FP4KIT_REQUIRE_SHARED(data, "text/tinystories_val.stories260k.u16");
  testing::TempDir tmp;
  const std::string common = " --data " + quote(data.string()) + " --ctx 256 --chunks 6";
  const auto self = run_json(quote(dense.string()) + " --base " + quote(dense.string()) + common);
  EXPECT_EQ(self["tokens_scored"], 6 * 256);
  EXPECT_EQ(self["kl_divergence"]["kld"]["mean"]["value"].get<double>(), 0.0);
  EXPECT_EQ(self["kl_divergence"]["same_top_p"]["value"].get<double>(), 1.0);

  const auto base_file = tmp / "base.bin";
  const auto a = run_json(quote(routed.string()) + " --base " + quote(dense.string()) + common +
                          " --save-base " + quote(base_file.string()));
  const auto b = run_json(quote(routed.string()) + " --base-logits " + quote(base_file.string()));
  EXPECT_GT(a["kl_divergence"]["kld"]["mean"]["value"].get<double>(), 0.001);
  EXPECT_LT(a["kl_divergence"]["same_top_p"]["value"].get<double>(), 1.0);
  EXPECT_EQ(a["kl_divergence"], b["kl_divergence"]);
  EXPECT_EQ(a["ppl"], b["ppl"]);
}

TEST(EvalCli, TextSummaryHasTheLlamaCppLayout) {
  FP4KIT_REQUIRE_SHARED(dense, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(routed, "models/stories260k-mixtral-routed");
  FP4KIT_REQUIRE_SHARED(data, "text/tinystories_val.stories260k.u16");
  const auto r = run_command(testing::fp4kit_binary() + " eval " + quote(routed.string()) +
                             " --base " + quote(dense.string()) + " --data " +
                             quote(data.string()) + " --ctx 256 --chunks 4");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* line :
       {"====== Perplexity statistics ======", "Mean PPL(Q)                   : ",
        "====== KL divergence statistics ======", "Mean    KLD: ", "99.0%   KLD: ",
        "90.0%   KLD: ", "Median  KLD: ", "RMS Δp    : ", "Same top p: ", "Final estimate: PPL = "})
    EXPECT_NE(r.output.find(line), std::string::npos) << line << "\n" << r.output;
}

TEST(EvalCli, PerplexityOnlyWithoutBaseAndErrors) {
  FP4KIT_REQUIRE_SHARED(dense, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(data, "text/tinystories_val.stories260k.u16");
  const auto j = run_json(quote(dense.string()) + " --data " + quote(data.string()) +
                          " --ctx 256 --tokens 2000");
  EXPECT_FALSE(j.contains("kl_divergence"));
  EXPECT_EQ(j["tokens_scored"], 1999);
  EXPECT_GT(j["ppl"]["value"].get<double>(), 1.0);
  const auto missing = run_command(testing::fp4kit_binary() + " eval " + quote(dense.string()));
  EXPECT_EQ(missing.exit_code, 1) << missing.output;
  const auto bad = run_command(testing::fp4kit_binary() + " eval " + quote(dense.string()) +
                               " --data /nonexistent/file.u16");
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
}

}  // namespace
}  // namespace fp4kit
