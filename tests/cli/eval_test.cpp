// `fp4kit eval` end to end on the real stories260K checkpoints.
#include <gtest/gtest.h>

#include <map>

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
  EXPECT_EQ(missing.exit_code, 2) << "a missing --data is wrong usage\n" << missing.output;
  const auto bad = run_command(testing::fp4kit_binary() + " eval " + quote(dense.string()) +
                               " --data /nonexistent/file.u16");
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
}

// NVFP4 checkpoints from `fp4kit quantize` in both formats (A: ModelOpt weight_scale_2 and
// input_scale; B: compressed-tensors reciprocal globals) are decoded as loaders do: both formats
// hold the same bytes, so they evaluate to the same numbers up to the one rounding of 1/s2; W4A4
// (activation simulation) costs more than weight-only.
TEST(EvalCli, Nvfp4FormatsAAndBAgreeAndW4A4IsSimulated) {
  FP4KIT_REQUIRE_SHARED(dense, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(data, "text/tinystories_val.stories260k.u16");
  testing::TempDir tmp;
  const std::string bin = testing::fp4kit_binary();
  const auto stats = tmp / "stats.safetensors";
  ASSERT_EQ(run_command(bin + " calibrate " + quote(dense.string()) + " --data " +
                        quote(data.string()) + " --samples 8 --seq-len 256 -o " +
                        quote(stats.string())).exit_code, 0);
  std::map<std::string, nlohmann::json> r;
  for (const char* fmt : {"modelopt", "compressed-tensors"})
    for (const char* kind : {"w4a16", "w4a4"}) {
      const auto out = tmp / (std::string(fmt) + "-" + kind);
      const std::string extra = std::string(kind) == "w4a16" ? " --weights-only"
                                                             : " --stats " + quote(stats.string());
      const auto q = run_command(bin + " quantize " + quote(dense.string()) + " " +
                                 quote(out.string()) + " --format " + fmt + extra);
      ASSERT_EQ(q.exit_code, 0) << q.output;
      r[std::string(fmt) + "-" + kind] =
          run_json(quote(out.string()) + " --base " + quote(dense.string()) + " --data " +
                   quote(data.string()) + " --ctx 256 --chunks 8");
    }
  for (const char* kind : {"w4a16", "w4a4"}) {
    const auto& a = r[std::string("modelopt-") + kind];
    const auto& b = r[std::string("compressed-tensors-") + kind];
    const double pa = a["ppl"]["value"], pb = b["ppl"]["value"];
    EXPECT_NEAR(pa, pb, 1e-4 * pa) << kind;
    EXPECT_EQ(a["activation_quantization"], std::string(kind) == "w4a4");
    EXPECT_EQ(b["activation_quantization"], std::string(kind) == "w4a4");
  }
  const double k16 = r["modelopt-w4a16"]["kl_divergence"]["kld"]["mean"]["value"];
  const double k4 = r["modelopt-w4a4"]["kl_divergence"]["kld"]["mean"]["value"];
  EXPECT_GT(k16, 0.01);  // NVFP4 weights on a 260K model: clearly visible
  EXPECT_GT(k4, k16);    // quantized activations on top
}

}  // namespace
}  // namespace fp4kit
