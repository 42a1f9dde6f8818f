// llama2.c -> Hugging Face conversion (model/llama2c_checkpoint.hpp) against the checkpoints of
// shared/data (made by the data README's conversion scripts, checked there against numpy and
// transformers): every tensor must have the same name, dtype, shape and bytes.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/model/llama2c_checkpoint.hpp"
#include "support/error_of.hpp"
#include "support/shared_data.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

std::vector<uint8_t> read_bytes(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void expect_same_tensors(const std::filesystem::path& got_dir, const std::filesystem::path& want_dir) {
  auto got = Checkpoint::open(got_dir);
  auto want = Checkpoint::open(want_dir);
  ASSERT_EQ(got->tensor_names(), want->tensor_names());
  for (const auto& name : want->tensor_names()) {
    EXPECT_EQ(got->info(name).dtype, want->info(name).dtype) << name;
    EXPECT_EQ(got->info(name).shape, want->info(name).shape) << name;
    const auto a = got->bytes(name), b = want->bytes(name);
    EXPECT_TRUE(a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin())) << name;
  }
  // The config keys the engine and the loaders read.
  for (const char* key : {"architectures", "model_type", "hidden_size", "intermediate_size",
                          "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                          "head_dim", "vocab_size", "max_position_embeddings", "rms_norm_eps",
                          "rope_theta", "hidden_act", "tie_word_embeddings", "torch_dtype",
                          "num_local_experts", "num_experts_per_tok", "sliding_window"})
    EXPECT_EQ(got->config().value(key, nlohmann::json()), want->config().value(key, nlohmann::json()))
        << key;
  EXPECT_EQ(got->generation_config(), want->generation_config());
}

TEST(Llama2c, DenseAndSplitExpertCheckpointsEqualTheSharedDataOnes) {
  FP4KIT_REQUIRE_SHARED(bin, "models/stories260k-llama2c/stories260K.bin");
  FP4KIT_REQUIRE_SHARED(dense, "models/stories260k-llama");
  FP4KIT_REQUIRE_SHARED(mixtral, "models/stories260k-mixtral");
  const auto bytes = read_bytes(bin);
  const auto m = read_llama2c(bytes, bin.string());
  EXPECT_EQ(m.dim, 64);
  EXPECT_EQ(m.hidden, 172);
  EXPECT_EQ(m.layers, 5);
  EXPECT_EQ(m.kv_dim(), 32);
  testing::TempDir tmp;
  EXPECT_EQ(write_llama2c_as_llama(m, tmp / "llama"), 260032u);  // README: 260,032 parameters
  expect_same_tensors(tmp / "llama", dense);
  write_llama2c_as_mixtral(m, tmp / "mixtral", 4);
  expect_same_tensors(tmp / "mixtral", mixtral);
}

TEST(Llama2c, RejectsATruncatedFileAndAnInexactExpertSplit) {
  FP4KIT_REQUIRE_SHARED(bin, "models/stories260k-llama2c/stories260K.bin");
  auto bytes = read_bytes(bin);
  bytes.pop_back();
  const auto msg = testing::error_of([&] { read_llama2c(bytes, "cut.bin"); });
  EXPECT_NE(msg.find("cut.bin: 1056539 bytes"), std::string::npos) << msg;
  EXPECT_NE(testing::error_of([&] { read_llama2c(std::span(bytes).first(20), "h.bin"); })
                .find("too short"),
            std::string::npos);
  bytes.push_back(0);
  const auto m = read_llama2c(bytes, "ok.bin");
  testing::TempDir tmp;
  EXPECT_NE(testing::error_of([&] { write_llama2c_as_mixtral(m, tmp / "x", 3); })
                .find("not a power of two"),
            std::string::npos);
}

}  // namespace
}  // namespace fp4kit
