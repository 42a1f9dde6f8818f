// Host-held activations through the CLI (FP4KIT_ACTIVATIONS=host, forced on the CPU backend): the
// memory plan says so, and the statistics file and the eval logits are the same bytes as the
// resident run's.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <string>

#include "support/file_bytes.hpp"
#include "support/run_command.hpp"
#include "support/shared_data.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

using testing::quote;
using testing::run_command;

using testing::file_bytes;

TEST(HostHeldCli, CalibrateStatsFileSameBytesAsResident) {
  FP4KIT_REQUIRE_SHARED(dense, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(routed, "models/stories260k-mixtral-routed");
  FP4KIT_REQUIRE_SHARED(data, "text/tinystories_val.stories260k.u16");
  testing::TempDir tmp;
  for (const auto& model : {dense, routed}) {
    // 8 x 64 tokens in spans of 128: the dense model runs 4 groups per layer.
    const std::string args = " calibrate " + quote(model.string()) + " --data " +
                             quote(data.string()) +
                             " --samples 8 --seq-len 64 --chunk-tokens 128 --threads 2 -o ";
    const auto res = run_command("FP4KIT_ACTIVATIONS=resident " + testing::fp4kit_binary() + args +
                                 quote((tmp / "res.safetensors").string()));
    ASSERT_EQ(res.exit_code, 0) << res.output;
    EXPECT_NE(res.output.find("memory: resident"), std::string::npos) << res.output;
    const auto host = run_command("FP4KIT_ACTIVATIONS=host " + testing::fp4kit_binary() + args +
                                  quote((tmp / "host.safetensors").string()));
    ASSERT_EQ(host.exit_code, 0) << host.output;
    EXPECT_NE(host.output.find("memory: host-held (FP4KIT_ACTIVATIONS=host): the hidden states "
                               "of all 512 tokens"),
              std::string::npos)
        << host.output;
    const std::string a = file_bytes(tmp / "res.safetensors"), b = file_bytes(tmp / "host.safetensors");
    EXPECT_GT(a.size(), 1000u);
    EXPECT_TRUE(a == b) << model << ": the statistics files differ";
  }
}

TEST(HostHeldCli, TooLittleHostMemoryIsRefusedWithTheNumbers) {
  FP4KIT_REQUIRE_SHARED(dense, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(data, "text/tinystories_val.stories260k.u16");
  testing::TempDir tmp;
  // 16 x 64 tokens of hidden 64: 256 KiB of hidden states; 100000 bytes available.
  const auto r = run_command("FP4KIT_ACTIVATIONS=host FP4KIT_HOST_MEMORY_LIMIT=100000 " +
                             testing::fp4kit_binary() + " calibrate " + quote(dense.string()) +
                             " --data " + quote(data.string()) + " --samples 16 --seq-len 64 -o " +
                             quote((tmp / "s.safetensors").string()));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("host-held activations: the hidden states of all 1024 tokens need 0.25 "
                          "MiB of host memory, but only 0.10 MiB is available (MemAvailable, "
                          "FP4KIT_HOST_MEMORY_LIMIT)"),
            std::string::npos)
      << r.output;
  EXPECT_FALSE(std::filesystem::exists(tmp / "s.safetensors"));
}

TEST(HostHeldCli, EvalLogitsSameBytesAsResidentAndBadSettingIsAnError) {
  FP4KIT_REQUIRE_SHARED(dense, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(data, "text/tinystories_val.stories260k.u16");
  testing::TempDir tmp;
  // 40 windows of 128 tokens: 5120 tokens, groups of 2048.
  const std::string args = " eval " + quote(dense.string()) + " --data " + quote(data.string()) +
                           " --ctx 128 --chunks 40 --dump-logits ";
  const auto res = run_command(testing::fp4kit_binary() + args + quote((tmp / "res.bin").string()));
  ASSERT_EQ(res.exit_code, 0) << res.output;
  const auto host = run_command("FP4KIT_ACTIVATIONS=host " + testing::fp4kit_binary() + args +
                                quote((tmp / "host.bin").string()));
  ASSERT_EQ(host.exit_code, 0) << host.output;
  EXPECT_NE(host.output.find("eval: memory: host-held"), std::string::npos) << host.output;
  const std::string a = file_bytes(tmp / "res.bin"), b = file_bytes(tmp / "host.bin");
  EXPECT_GT(a.size(), 40u * 128u * 4u);
  EXPECT_TRUE(a == b) << "the dumped logits differ";
  const auto bad = run_command("FP4KIT_ACTIVATIONS=gpu " + testing::fp4kit_binary() + args +
                               quote((tmp / "bad.bin").string()));
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_NE(bad.output.find("FP4KIT_ACTIVATIONS=gpu: must be auto, resident or host"),
            std::string::npos)
      << bad.output;
}

}  // namespace
}  // namespace fp4kit
