// `fp4kit demo` needs no input and must end with checked outputs and a quality table.
#include <gtest/gtest.h>

#include <regex>

#include "support/run_command.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

TEST(Demo, RunsEndToEndAndReportsQuality) {
  testing::TempDir tmp;
  const auto r = testing::run_command(testing::fp4kit_binary() + " demo --dir " +
                                      testing::quote((tmp / "demo").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* d : {"nvfp4-w4a4-modelopt", "nvfp4-w4a4-ct", "nvfp4-w4a16-modelopt"}) {
    EXPECT_TRUE(std::filesystem::exists(tmp / "demo" / d / "config.json")) << d;
    EXPECT_FALSE(std::filesystem::exists(tmp / "demo" / (std::string(d) + ".partial"))) << d;
  }
  EXPECT_NE(r.output.find("verify (full): passed"), std::string::npos) << r.output;
  // "NVFP4 W4A4   <ppl>   <kld>   <top1>%": quantization must cost something, but little.
  std::smatch m;
  const std::regex row(R"(NVFP4 W4A4\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)%)");
  ASSERT_TRUE(std::regex_search(r.output, m, row)) << r.output;
  const double kld = std::stod(m[2]), top1 = std::stod(m[3]);
  EXPECT_GT(kld, 0.0);
  EXPECT_LT(kld, 0.05);
  EXPECT_GT(top1, 80.0);
  EXPECT_LT(top1, 100.0 + 1e-9);
}

}  // namespace
}  // namespace fp4kit
