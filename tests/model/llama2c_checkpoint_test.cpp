// llama2.c -> Hugging Face conversion (model/llama2c_checkpoint.hpp) against the checkpoints of
// shared/data (made by the data README's conversion scripts, checked there against numpy and
// transformers): every tensor must have the same name, dtype, shape and bytes.
#include <gtest/gtest.h>

#include <cstring>
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

// A small llama2.c file written here (unshared classifier: header vocab < 0); values are integers
// (exact in bf16) following the file position modulo a prime, so a tensor read from the wrong
// place or a wrong row permutation shows.
TEST(Llama2c, UnsharedClassifierAndRopePermutationOnASyntheticFile) {
  const int32_t dim = 16, hidden = 32, layers = 2, heads = 2, kv_heads = 1, vocab = 8, seq = 4;
  const int32_t header[7] = {dim, hidden, layers, heads, kv_heads, -vocab, seq};
  const int64_t hd = dim / heads, kvd = kv_heads * hd, freq = seq * hd / 2;
  const int64_t counts[] = {vocab * dim, layers * dim, layers * dim * dim, layers * kvd * dim,
                            layers * kvd * dim, layers * dim * dim, layers * dim,
                            layers * hidden * dim, layers * dim * hidden, layers * hidden * dim,
                            dim, freq, freq, vocab * dim};
  std::vector<uint8_t> file(sizeof header);
  std::memcpy(file.data(), header, sizeof header);
  std::vector<float> all;
  for (int64_t c : counts)
    for (int64_t i = 0; i < c; ++i) all.push_back(static_cast<float>(int64_t(all.size() % 251) - 125));
  file.resize(sizeof header + 4 * all.size());
  std::memcpy(file.data() + sizeof header, all.data(), 4 * all.size());
  const auto m = read_llama2c(file, "tiny.bin");
  EXPECT_FALSE(m.shared_classifier);
  testing::TempDir tmp;
  write_llama2c_as_llama(m, tmp / "llama");
  auto ck = Checkpoint::open(tmp / "llama");
  auto value = [&](const std::string& name, size_t i) {
    uint16_t b;
    std::memcpy(&b, ck->bytes(name).data() + 2 * i, 2);
    uint32_t u = uint32_t(b) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  };
  auto offset = [&](int part) {
    int64_t o = 0;
    for (int p = 0; p < part; ++p) o += counts[p];
    return o;
  };
  ASSERT_TRUE(ck->has("lm_head.weight"));
  for (size_t i = 0; i < size_t(vocab * dim); ++i)
    ASSERT_EQ(value("lm_head.weight", i), all[offset(13) + i]) << i;
  EXPECT_EQ(ck->config().at("tie_word_embeddings"), false);
  // q_proj of layer 1: HF row h*hd + j*hd/2 + i holds llama2.c row h*hd + 2i + j.
  const std::string q = "model.layers.1.self_attn.q_proj.weight";
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < hd / 2; ++i)
      for (int64_t j = 0; j < 2; ++j)
        for (int64_t c = 0; c < dim; ++c) {
          const int64_t src = offset(2) + dim * dim + (h * hd + 2 * i + j) * dim + c;
          ASSERT_EQ(value(q, size_t((h * hd + j * hd / 2 + i) * dim + c)), all[src]);
        }
  // down_proj of layer 0 = w2 (part 8) as it is; the final norm = part 10.
  for (size_t i = 0; i < size_t(dim * hidden); ++i)
    ASSERT_EQ(value("model.layers.0.mlp.down_proj.weight", i), all[offset(8) + i]);
  for (size_t i = 0; i < size_t(dim); ++i) ASSERT_EQ(value("model.norm.weight", i), all[offset(10) + i]);
}

}  // namespace
}  // namespace fp4kit
