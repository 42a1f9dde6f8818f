// `fp4kit verify` as a user runs it: exit codes (0 pass or warnings only, 1 errors, 2 usage),
// the human table and the JSON report.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "support/run_command.hpp"
#include "support/temp_dir.hpp"
#include "verify/nvfp4_fixture.hpp"

namespace fp4kit::testing {
namespace {

struct RunResult {
  int code = -1;
  std::string out;
};

RunResult run_fp4kit(const std::string& args) {
  const auto r = run_command(quote(fp4kit_binary()) + " " + args);
  return {r.exit_code, r.output};
}

MemCheckpoint good_checkpoint() { return build_nvfp4(make_moe_source()); }

TEST(CliVerify, GoodCheckpointExitsZero) {
  TempDir d;
  good_checkpoint().write(d / "out");
  const auto r = run_fp4kit("verify " + (d / "out").string());
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("result: PASS"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("format: modelopt"), std::string::npos) << r.out;
}

TEST(CliVerify, BrokenCheckpointExitsOneAndNamesModuleAndRule) {
  TempDir d;
  auto m = good_checkpoint();
  m.tensors["lm_head.input_scale"] = {DType::F32, {}, f32_bytes(0.001f)};
  m.write(d / "out");
  const auto report = d / "report.json";
  const auto r = run_fp4kit("verify " + (d / "out").string() + " --report " + report.string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("exclude.has_scales"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("lm_head.input_scale"), std::string::npos) << r.out;
  std::ifstream in(report);
  ASSERT_TRUE(in.good());
  const auto j = nlohmann::json::parse(in);
  EXPECT_FALSE(j["ok"].get<bool>());
  ASSERT_FALSE(j["findings"].empty());
  EXPECT_EQ(j["findings"][0]["check"], "exclude.has_scales");
  EXPECT_EQ(j["findings"][0]["module"], "lm_head");
}

TEST(CliVerify, WarningsAloneExitZero) {
  TempDir d;
  auto m = good_checkpoint();
  const std::string x = "model.layers.0.mlp.experts.1.down_proj.input_scale";
  m.set_f32(x, 3 * m.get_f32(x));  // experts of a layer disagree: a warning
  m.write(d / "out");
  const auto r = run_fp4kit("verify " + (d / "out").string());
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("input_scale.experts"), std::string::npos) << r.out;
}

TEST(CliVerify, WithSourceComparesEveryQuantizedTensor) {
  TempDir d;
  const auto src = make_moe_source();
  write_source(d / "src", src);
  build_nvfp4(src).write(d / "out");
  const auto report = d / "r.json";
  const auto r = run_fp4kit("verify " + (d / "out").string() + " --source " + (d / "src").string() +
                            " --report " + report.string());
  EXPECT_EQ(r.code, 0) << r.out;
  std::ifstream in(report);
  const auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j["numeric"]["tensors"].size(), 32u);
}

TEST(CliVerify, UsageErrorsExitTwo) {
  EXPECT_EQ(run_fp4kit("verify").code, 2);
  EXPECT_EQ(run_fp4kit("verify a b c --no-such-flag").code, 2);
}

TEST(CliVerify, UnreadableSourceExitsOne) {
  TempDir d;
  good_checkpoint().write(d / "out");
  const auto r = run_fp4kit("verify " + (d / "out").string() + " --source " + (d / "nope").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("nope"), std::string::npos) << r.out;
}

TEST(CliVerify, MissingDirectoryExitsOne) {
  TempDir d;
  const auto r = run_fp4kit("verify " + (d / "nope").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("checkpoint.read"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace fp4kit::testing
