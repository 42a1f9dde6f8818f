// Checkpoint directories: single file, sharded through an index, configs, sidecar discovery, and
// the index errors of issue 3.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

#include "fp4kit/error.hpp"
#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/safetensors_index.hpp"
#include "io/raw_safetensors.hpp"
#include "support/shared_data.hpp"
#include "support/temp_dir.hpp"
#include "support/error_of.hpp"

namespace fp4kit {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::safetensors_image;
using testing::TempDir;
using testing::write_file;

using testing::error_of;

// One U8 tensor of 2 bytes per name, contiguous.
std::string shard_image(const std::vector<std::string>& names) {
  std::string header = "{";
  std::string data;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i) header += ',';
    header += '"' + names[i] + R"(":{"dtype":"U8","shape":[2],"data_offsets":[)";
    header += std::to_string(2 * i) + ',' + std::to_string(2 * i + 2) + "]}";
    data += names[i].substr(0, 1) + std::to_string(i % 10);
  }
  return safetensors_image(header + "}", data);
}

void make_sharded(const fs::path& dir, const std::string& index_json) {
  write_file(dir / "model-00001-of-00002.safetensors", shard_image({"a", "b"}));
  write_file(dir / "model-00002-of-00002.safetensors", shard_image({"c"}));
  write_file(dir / "model.safetensors.index.json", index_json);
}

const char* kGoodIndex = R"({"metadata":{"total_size":6},"weight_map":{)"
                         R"("a":"model-00001-of-00002.safetensors",)"
                         R"("b":"model-00001-of-00002.safetensors",)"
                         R"("c":"model-00002-of-00002.safetensors"}})";

TEST(Checkpoint, ShardedThroughIndex) {
  TempDir dir;
  make_sharded(dir.path(), kGoodIndex);
  write_file(dir / "config.json", R"({"model_type":"llama","text_config":{"hidden_size":8}})");
  auto ck = Checkpoint::open(dir.path());
  EXPECT_EQ(ck->tensor_names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(ck->shards().size(), 2u);
  EXPECT_EQ(ck->file_of("c").path().filename(), "model-00002-of-00002.safetensors");
  auto c = ck->bytes("c");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(c.data()), c.size()), "c0");
  auto b = ck->bytes("b");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(b.data()), b.size()), "b1");
  EXPECT_EQ(ck->total_bytes(), 6u);
  EXPECT_TRUE(ck->has_config());
  EXPECT_EQ(ck->config()["text_config"]["hidden_size"], 8);
  EXPECT_TRUE(ck->has("a"));
  EXPECT_FALSE(ck->has("d"));
  EXPECT_THAT(error_of([&] { ck->info("d"); }), HasSubstr("no tensor \"d\""));
  // config.json, the index and the shards are not sidecars
  EXPECT_TRUE(ck->sidecar_files().empty());
}

TEST(Checkpoint, SidecarDiscovery) {
  TempDir dir;
  write_file(dir / "model.safetensors", shard_image({"w"}));
  write_file(dir / "config.json", "{}");
  write_file(dir / "generation_config.json", R"({"bos_token_id":1})");
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                        "chat_template.jinja", "preprocessor_config.json", "modeling_x.py",
                        "README.md", "tokenizer.bin", "original/tokenizer.model",
                        "original/params.json", "original/config.json"})
    write_file(dir / f, "x");
  // not sidecars: weights in any format, hidden directories
  for (const char* f : {"pytorch_model.bin", "pytorch_model-00001-of-00002.bin",
                        "pytorch_model.bin.index.json", "consolidated.safetensors",
                        "original/consolidated.00.pth", ".git/HEAD", ".cache/huggingface/x"})
    write_file(dir / f, "x");
  auto ck = Checkpoint::open(dir.path());
  std::vector<fs::path> expected = {"README.md", "chat_template.jinja", "generation_config.json",
                                    "modeling_x.py", "original/config.json", "original/params.json",
                                    "original/tokenizer.model", "preprocessor_config.json",
                                    "special_tokens_map.json", "tokenizer.bin", "tokenizer.json",
                                    "tokenizer_config.json"};
  EXPECT_EQ(ck->sidecar_files(), expected);
  EXPECT_EQ(ck->generation_config()["bos_token_id"], 1);
  // model.safetensors wins over the stray consolidated.safetensors (transformers' order)
  EXPECT_EQ(ck->tensor_names(), std::vector<std::string>{"w"});
}

TEST(Checkpoint, SingleOtherSafetensorsFileWithoutIndex) {
  TempDir dir;
  write_file(dir / "weights.safetensors", shard_image({"w"}));
  auto ck = Checkpoint::open(dir.path());
  EXPECT_EQ(ck->tensor_names(), std::vector<std::string>{"w"});
  EXPECT_FALSE(ck->has_config());
  EXPECT_TRUE(ck->config().is_object());
}

TEST(Checkpoint, SingleFilePath) {
  TempDir dir;
  write_file(dir / "x.safetensors", shard_image({"p", "q"}));
  auto ck = Checkpoint::open(dir / "x.safetensors");
  EXPECT_EQ(ck->tensor_names(), (std::vector<std::string>{"p", "q"}));
}

TEST(Checkpoint, RealSharedModelOpens) {
  FP4KIT_REQUIRE_SHARED(path, "models/stories260k-qwen3moe");
  auto ck = Checkpoint::open(path);
  EXPECT_EQ(ck->config()["model_type"], "qwen3_moe");
  EXPECT_TRUE(ck->has("model.layers.4.mlp.experts.3.down_proj.weight"));
  EXPECT_EQ(ck->info("model.layers.4.mlp.experts.3.down_proj.weight").shape,
            (std::vector<uint64_t>{64, 48}));
  // README: the MoE dirs carry tokenizer.json, tokenizer_config.json, special_tokens_map.json,
  // tokenizer.bin, generation_config.json.
  std::set<fs::path> side(ck->sidecar_files().begin(), ck->sidecar_files().end());
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                        "tokenizer.bin", "generation_config.json"})
    EXPECT_TRUE(side.count(f)) << f;
}

// Hugging Face cache snapshots: every file is a symlink into ../../blobs/.
TEST(Checkpoint, HuggingFaceCacheSnapshotOfSymlinks) {
  TempDir dir;
  write_file(dir / "blobs/b1", shard_image({"a", "b"}));
  write_file(dir / "blobs/b2", shard_image({"c"}));
  write_file(dir / "blobs/b3", kGoodIndex);
  write_file(dir / "blobs/b4", R"({"model_type":"llama"})");
  write_file(dir / "blobs/b5", "{}");
  const fs::path snap = dir / "snapshots/abc";
  fs::create_directories(snap);
  fs::create_symlink("../../blobs/b1", snap / "model-00001-of-00002.safetensors");
  fs::create_symlink("../../blobs/b2", snap / "model-00002-of-00002.safetensors");
  fs::create_symlink("../../blobs/b3", snap / "model.safetensors.index.json");
  fs::create_symlink("../../blobs/b4", snap / "config.json");
  fs::create_symlink("../../blobs/b5", snap / "tokenizer.json");
  auto ck = Checkpoint::open(snap);
  EXPECT_EQ(ck->tensor_names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(ck->config()["model_type"], "llama");
  EXPECT_EQ(ck->sidecar_files(), std::vector<fs::path>{"tokenizer.json"});
}

// ---- bad directories and indexes ----

TEST(CheckpointBad, IndexNamesMissingShard) {
  TempDir dir;
  make_sharded(dir.path(), R"({"weight_map":{"a":"model-00001-of-00002.safetensors",)"
                           R"("b":"model-00001-of-00002.safetensors",)"
                           R"("c":"model-00003-of-00003.safetensors"}})");
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir.path()); }),
              AllOf(HasSubstr("model.safetensors.index.json"), HasSubstr("\"c\""),
                    HasSubstr("shard \"model-00003-of-00003.safetensors\" does not exist")));
}

TEST(CheckpointBad, IndexNamesMissingTensor) {
  TempDir dir;
  make_sharded(dir.path(), R"({"weight_map":{"a":"model-00001-of-00002.safetensors",)"
                           R"("b":"model-00001-of-00002.safetensors",)"
                           R"("c":"model-00002-of-00002.safetensors",)"
                           R"("ghost":"model-00002-of-00002.safetensors"}})");
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir.path()); }),
              AllOf(HasSubstr("model.safetensors.index.json"), HasSubstr("\"ghost\""),
                    HasSubstr("has no such tensor")));
}

TEST(CheckpointBad, TensorListedTwiceInIndex) {
  TempDir dir;
  make_sharded(dir.path(), R"({"weight_map":{"a":"model-00001-of-00002.safetensors",)"
                           R"("b":"model-00001-of-00002.safetensors",)"
                           R"("c":"model-00002-of-00002.safetensors",)"
                           R"("a":"model-00002-of-00002.safetensors"}})");
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir.path()); }),
              AllOf(HasSubstr("model.safetensors.index.json"), HasSubstr("duplicate name \"a\"")));
}

TEST(CheckpointBad, TensorPresentInTwoShards) {
  TempDir dir;
  write_file(dir / "model-00001-of-00002.safetensors", shard_image({"a", "b"}));
  write_file(dir / "model-00002-of-00002.safetensors", shard_image({"a", "c"}));
  write_file(dir / "model.safetensors.index.json", kGoodIndex);
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir.path()); }),
              AllOf(HasSubstr("\"a\""), HasSubstr("in two shards")));
}

TEST(CheckpointBad, TensorInShardButNotInIndex) {
  TempDir dir;
  write_file(dir / "model-00001-of-00002.safetensors", shard_image({"a", "b"}));
  write_file(dir / "model-00002-of-00002.safetensors", shard_image({"c", "extra"}));
  write_file(dir / "model.safetensors.index.json", kGoodIndex);
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir.path()); }),
              AllOf(HasSubstr("\"extra\""), HasSubstr("not in the index")));
}

TEST(CheckpointBad, ShardPathEscapingTheDirectory) {
  TempDir dir;
  write_file(dir / "model.safetensors.index.json",
             R"({"weight_map":{"a":"../x.safetensors"}})");
  write_file(dir / "sub.safetensors", shard_image({"a"}));
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir.path()); }), HasSubstr("does not exist"));
}

TEST(CheckpointBad, IndexNotJsonOrWithoutWeightMap) {
  TempDir dir;
  make_sharded(dir.path(), "{\"weight_map\": ");
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir.path()); }), HasSubstr("invalid JSON"));
  write_file(dir / "model.safetensors.index.json", R"({"metadata":{}})");
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir.path()); }), HasSubstr("weight_map"));
}

TEST(CheckpointBad, BadShardIsNamed) {
  TempDir dir;
  make_sharded(dir.path(), kGoodIndex);
  write_file(dir / "model-00002-of-00002.safetensors", "");
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir.path()); }),
              AllOf(HasSubstr("model-00002-of-00002.safetensors"), HasSubstr("empty")));
}

TEST(CheckpointBad, SeveralFilesWithoutIndexOrNone) {
  TempDir dir;
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir.path()); }), HasSubstr("no model.safetensors"));
  write_file(dir / "a.safetensors", shard_image({"a"}));
  write_file(dir / "b.safetensors", shard_image({"b"}));
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir.path()); }),
              HasSubstr("2 *.safetensors files but no model.safetensors.index.json"));
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir / "missing"); }), HasSubstr("does not exist"));
}

TEST(CheckpointBad, ConfigNotJson) {
  TempDir dir;
  write_file(dir / "model.safetensors", shard_image({"w"}));
  write_file(dir / "config.json", "{oops");
  EXPECT_THAT(error_of([&] { Checkpoint::open(dir.path()); }),
              AllOf(HasSubstr("config.json"), HasSubstr("invalid JSON")));
}

// The pure index parser, as the fuzzer sees it.
TEST(SafetensorsIndexParse, AcceptsAndRejects) {
  const std::set<std::string> shards = {"s1.safetensors"};
  auto idx = parse_safetensors_index(
      R"({"metadata":{"total_size":4},"weight_map":{"x":"s1.safetensors"}})", shards, "i");
  EXPECT_EQ(idx.weight_map.at("x"), "s1.safetensors");
  EXPECT_EQ(idx.metadata["total_size"], 4);
  EXPECT_THAT(error_of([&] { parse_safetensors_index(R"({"weight_map":{"x":3}})", shards, "i"); }),
              AllOf(HasSubstr("\"x\""), HasSubstr("not a string")));
  EXPECT_THAT(error_of([&] { parse_safetensors_index(R"({"weight_map":{}})", shards, "i"); }),
              HasSubstr("no tensors"));
  EXPECT_THAT(error_of([&] { parse_safetensors_index("[]", shards, "i"); }),
              HasSubstr("not a JSON object"));
}

}  // namespace
}  // namespace fp4kit
