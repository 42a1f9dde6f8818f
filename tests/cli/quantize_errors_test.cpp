// Bad input to `fp4kit quantize`: each a clear error naming what is wrong, exit code 1, and no
// OUT that looks finished. Odd-but-valid configs must not crash.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/model/synthetic_checkpoint.hpp"
#include "support/run_command.hpp"
#include "support/small_moe_spec.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

using testing::quote;
using testing::run_command;
using testing::TempDir;
namespace fs = std::filesystem;

SyntheticMoeSpec small_spec() { return testing::small_moe_spec(); }

std::string quantize_cmd(const fs::path& src, const fs::path& out, const std::string& extra) {
  return testing::quantize_command(src, out, "--weights-only " + extra);
}

void edit_config(const fs::path& dir, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json c;
  {
    std::ifstream f(dir / "config.json");
    c = nlohmann::json::parse(f);
  }
  edit(c);
  std::ofstream(dir / "config.json") << c.dump(2);
}

// Overwrites the first element of a BF16 tensor in its file with `bits`.
void poke_bf16(const fs::path& dir, const std::string& tensor, uint16_t bits) {
  uint64_t begin = 0;
  fs::path file;
  {
    auto c = Checkpoint::open(dir);
    begin = c->info(tensor).begin;
    file = c->file_of(tensor).path();
  }
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  uint64_t header_len = 0;
  f.read(reinterpret_cast<char*>(&header_len), 8);
  f.seekp(static_cast<std::streamoff>(8 + header_len + begin));
  f.write(reinterpret_cast<const char*>(&bits), 2);
}

void expect_nothing_finished(const fs::path& out) {
  EXPECT_FALSE(fs::exists(out / "config.json")) << "an OUT that looks finished";
  EXPECT_FALSE(fs::exists(fs::path(out.string() + ".partial")));
}

TEST(QuantizeBadInput, ArchitecturesNullStillWorks) {
  TempDir tmp;
  write_synthetic_moe(tmp / "src", small_spec());
  edit_config(tmp / "src", [](nlohmann::json& c) { c["architectures"] = nullptr; });
  const auto r = run_command(quantize_cmd(tmp / "src", tmp / "out", ""));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  auto q = Checkpoint::open(tmp / "out");
  EXPECT_TRUE(q->has("model.layers.0.mlp.experts.0.gate_proj.weight_scale"));
}

TEST(QuantizeBadInput, ArchitecturesMissingStillWorks) {
  TempDir tmp;
  write_synthetic_moe(tmp / "src", small_spec());
  edit_config(tmp / "src", [](nlohmann::json& c) { c.erase("architectures"); });
  EXPECT_EQ(run_command(quantize_cmd(tmp / "src", tmp / "out", "")).exit_code, 0);
}

TEST(QuantizeBadInput, UnknownFamilyFallsBackToGenericAndSaysSo) {
  TempDir tmp;
  write_synthetic_moe(tmp / "src", small_spec());
  edit_config(tmp / "src", [](nlohmann::json& c) {
    c["model_type"] = "brand_new_moe";
    c["architectures"] = {"BrandNewMoeForCausalLM"};
  });
  const auto r = run_command(quantize_cmd(tmp / "src", tmp / "out", "--dry-run"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("generic"), std::string::npos) << r.output;
}

TEST(QuantizeBadInput, RuleMatchingNothingFailsAndNamesTheRule) {
  TempDir tmp;
  write_synthetic_moe(tmp / "src", small_spec());
  const auto r = run_command(
      quantize_cmd(tmp / "src", tmp / "out", "--exclude '*.experts.*.gate_up_proj_weight_quantizers.*'"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("gate_up_proj_weight_quantizers"), std::string::npos) << r.output;
  expect_nothing_finished(tmp / "out");
}

TEST(QuantizeBadInput, KNotMultipleOf16IsKeptByDefaultAndAnErrorWhenIncluded) {
  TempDir tmp;
  SyntheticMoeSpec s = small_spec();
  s.moe_intermediate = 40;  // expert down_proj has K = 40
  write_synthetic_moe(tmp / "src", s);
  auto r = run_command(quantize_cmd(tmp / "src", tmp / "out", ""));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto q = Checkpoint::open(tmp / "out");
  EXPECT_EQ(q->info("model.layers.0.mlp.experts.1.down_proj.weight").dtype, DType::BF16);
  EXPECT_TRUE(q->has("model.layers.0.mlp.experts.1.gate_proj.weight_scale"));
  EXPECT_NE(r.output.find("down_proj"), std::string::npos) << "the kept tensor is reported";

  r = run_command(quantize_cmd(tmp / "src", tmp / "out2", "--include '*.experts.*.down_proj'"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("model.layers.1.mlp.experts.3.down_proj"), std::string::npos)
      << "all such tensors are listed:\n" << r.output;
  expect_nothing_finished(tmp / "out2");
}

TEST(QuantizeBadInput, NanWeightNamesTheTensor) {
  TempDir tmp;
  write_synthetic_moe(tmp / "src", small_spec());
  poke_bf16(tmp / "src", "model.layers.1.mlp.experts.2.up_proj.weight", 0x7FC0);
  const auto r = run_command(quantize_cmd(tmp / "src", tmp / "out", ""));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("model.layers.1.mlp.experts.2.up_proj"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("NaN"), std::string::npos) << r.output;
  expect_nothing_finished(tmp / "out");
}

TEST(QuantizeBadInput, NonEmptyOutRefusedWithoutForce) {
  TempDir tmp;
  write_synthetic_moe(tmp / "src", small_spec());
  fs::create_directories(tmp / "out");
  std::ofstream(tmp / "out" / "precious.txt") << "keep me";
  auto r = run_command(quantize_cmd(tmp / "src", tmp / "out", ""));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(fs::exists(tmp / "out" / "precious.txt"));
  r = run_command(quantize_cmd(tmp / "src", tmp / "out", "--force"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(fs::exists(tmp / "out" / "precious.txt"));
}

TEST(QuantizeBadInput, OutInsideSourceRefused) {
  TempDir tmp;
  write_synthetic_moe(tmp / "src", small_spec());
  const auto r = run_command(quantize_cmd(tmp / "src", tmp / "src" / "nvfp4", ""));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_FALSE(fs::exists(tmp / "src" / "nvfp4"));
}

TEST(QuantizeBadInput, MissingShardNamesIt) {
  TempDir tmp;
  SyntheticMoeSpec s = small_spec();
  s.max_shard_bytes = 64 * 1024;  // several shards
  write_synthetic_moe(tmp / "src", s);
  ASSERT_TRUE(fs::exists(tmp / "src" / "model.safetensors.index.json"));
  fs::path victim;
  for (const auto& f : fs::directory_iterator(tmp / "src"))
    if (f.path().filename().string().find("-of-") != std::string::npos) victim = f.path();
  ASSERT_FALSE(victim.empty());
  fs::remove(victim);
  const auto r = run_command(quantize_cmd(tmp / "src", tmp / "out", ""));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(victim.filename().string()), std::string::npos) << r.output;
  expect_nothing_finished(tmp / "out");
}

TEST(QuantizeBadInput, FullDiskIsAClearErrorAndLeavesNoFinishedOut) {
  TempDir tmp;
  SyntheticMoeSpec s = small_spec();
  s.hidden = 256;
  s.moe_intermediate = 256;
  write_synthetic_moe(tmp / "src", s);
  // A file-size limit of 64 KiB makes the shard write fail part-way (EFBIG), like a full disk.
  const auto r = run_command("bash -c " + quote("ulimit -f 64; " +
                                                quantize_cmd(tmp / "src", tmp / "out", "")));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("error"), std::string::npos) << r.output;
  expect_nothing_finished(tmp / "out");
}

}  // namespace
}  // namespace fp4kit
