// `fp4kit inspect` through the built binary: text and JSON reports of real and hand-made
// checkpoints, and exit code 1 with a specific message for every kind of bad input.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "io/raw_safetensors.hpp"
#include "support/run_command.hpp"
#include "support/shared_data.hpp"
#include "support/temp_dir.hpp"

namespace fp4kit {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using testing::quote;
using testing::run_command;
using testing::safetensors_image;
using testing::TempDir;
using testing::write_file;

testing::CommandResult inspect(const fs::path& dir, const std::string& extra = "") {
  return run_command(quote(testing::fp4kit_binary()) + " inspect " + quote(dir.string()) + extra);
}

TEST(InspectCli, RealMoeCheckpointText) {
  FP4KIT_REQUIRE_SHARED(dir, "models/stories260k-qwen3moe");
  auto r = inspect(dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Values from shared/data/README.md.
  EXPECT_THAT(r.output, HasSubstr("model_type qwen3_moe, architectures Qwen3MoeForCausalLM"));
  EXPECT_THAT(r.output, HasSubstr("layers 5, hidden 64, experts 4 (4 per token), dtype bfloat16"));
  EXPECT_THAT(r.output, HasSubstr("quantization: none"));
  // expert down_proj: [64,48] bf16 = 6144 bytes, in model.safetensors
  EXPECT_THAT(r.output, ::testing::ContainsRegex(
                            "model\\.layers\\.4\\.mlp\\.experts\\.3\\.down_proj\\.weight +BF16 +"
                            "\\[64,48\\] +6144  model\\.safetensors"));
  EXPECT_THAT(r.output, HasSubstr("tokenizer.json"));
}

TEST(InspectCli, RealDenseCheckpointJson) {
  FP4KIT_REQUIRE_SHARED(dir, "models/stories260k-llama");
  auto r = run_command(quote(testing::fp4kit_binary()) + " inspect --json " + quote(dir.string()) +
                       " 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  // README: 47 tensors, all BF16, 260,032 parameters; LlamaForCausalLM, 5 layers, hidden 64.
  EXPECT_EQ(j["tensors"].size(), 47u);
  EXPECT_EQ(j["total_bytes"], 260032u * 2);
  EXPECT_EQ(j["totals_by_dtype"]["BF16"]["tensors"], 47);
  EXPECT_EQ(j["totals_by_dtype"]["BF16"]["bytes"], 260032u * 2);
  EXPECT_EQ(j["model"]["model_type"], "llama");
  EXPECT_EQ(j["model"]["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(j["model"]["num_hidden_layers"], 5);
  EXPECT_EQ(j["model"]["hidden_size"], 64);
  EXPECT_EQ(j["model"]["num_experts"], 0);
  EXPECT_TRUE(j["quantization"].empty());
  EXPECT_EQ(j["metadata"]["format"], "pt");
  bool found = false;
  for (const auto& t : j["tensors"])
    if (t["name"] == "model.layers.0.mlp.down_proj.weight") {
      found = true;
      EXPECT_EQ(t["shape"], nlohmann::json::array({64, 172}));
      EXPECT_EQ(t["bytes"], 64 * 172 * 2);
      EXPECT_EQ(t["dtype"], "BF16");
      EXPECT_EQ(t["shard"], "model.safetensors");
    }
  EXPECT_TRUE(found);
}

// Two shards, a wrapper config with architectures null, and both kinds of quantization config.
TEST(InspectCli, ShardedWrapperWithQuantizationConfigs) {
  TempDir t;
  write_file(t / "model-00001-of-00002.safetensors",
             safetensors_image(R"({"a":{"dtype":"F8_E4M3","shape":[2,2],"data_offsets":[0,4]}})",
                               "1234"));
  write_file(t / "model-00002-of-00002.safetensors",
             safetensors_image(R"({"b":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})",
                               "12345678"));
  write_file(t / "model.safetensors.index.json",
             R"({"weight_map":{"a":"model-00001-of-00002.safetensors",)"
             R"("b":"model-00002-of-00002.safetensors"}})");
  write_file(t / "config.json",
             R"({"architectures":null,"model_type":"llava",)"
             R"("text_config":{"model_type":"mixtral","num_hidden_layers":2,"hidden_size":16,)"
             R"("num_local_experts":8,"num_experts_per_tok":2},)"
             R"("quantization_config":{"quant_method":"compressed-tensors",)"
             R"("format":"nvfp4-pack-quantized"}})");
  write_file(t / "hf_quant_config.json",
             R"({"producer":{"name":"modelopt","version":"0.29"},)"
             R"("quantization":{"quant_algo":"NVFP4","group_size":16}})");
  auto r = inspect(t.path());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("model_type mixtral (inside llava), architectures (none)"));
  EXPECT_THAT(r.output, HasSubstr("layers 2, hidden 16, experts 8 (2 per token)"));
  EXPECT_THAT(r.output, HasSubstr("quant_method=compressed-tensors format=nvfp4-pack-quantized"));
  EXPECT_THAT(r.output, HasSubstr("(hf_quant_config.json): producer=modelopt quant_algo=NVFP4"));
  EXPECT_THAT(r.output, HasSubstr("shards: 2"));
  EXPECT_THAT(r.output, ::testing::ContainsRegex("F8_E4M3 +1 tensors +4 bytes"));
  EXPECT_THAT(r.output, ::testing::ContainsRegex("\nb +U8 +\\[8\\] +8  model-00002-of-00002"));

  auto j = run_command(quote(testing::fp4kit_binary()) + " inspect --json " +
                       quote(t.path().string()) + " 2>/dev/null");
  ASSERT_EQ(j.exit_code, 0);
  auto doc = nlohmann::json::parse(j.output);
  EXPECT_TRUE(doc["model"]["architectures"].empty());
  ASSERT_EQ(doc["quantization"].size(), 2u);
  EXPECT_EQ(doc["quantization"][0]["quant_method"], "compressed-tensors");
  EXPECT_EQ(doc["quantization"][1]["quant_algo"], "NVFP4");
  EXPECT_EQ(doc["total_bytes"], 12);
}

// A one-file checkpoint of zero-filled tensors: {name, dtype, shape, bytes per element}.
struct RawTensor {
  std::string name, dtype;
  std::vector<uint64_t> shape;
  uint64_t elem_bytes;
};
std::string raw_checkpoint(const std::vector<RawTensor>& ts) {
  nlohmann::json h = nlohmann::json::object();
  uint64_t at = 0;
  for (const auto& t : ts) {
    uint64_t n = t.elem_bytes;
    for (auto d : t.shape) n *= d;
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {at, at + n}}};
    at += n;
  }
  return safetensors_image(h.dump(), std::string(at, '\0'));
}

// Source formats (NVFP4-SPEC section 8) and NVFP4 outputs shown as the matrices they encode.
TEST(InspectCli, EncodedWeightsShowTheirLogicalShape) {
  TempDir t;
  const std::string x = "model.layers.0.mlp.experts.";
  write_file(t / "model.safetensors",
             raw_checkpoint({
                 // gpt-oss MXFP4: [E=2, N=4, K/32=2, 16] codes + [2, 4, 2] E8M0 scales -> [2, 4, 64]
                 {x + "gate_up_proj_blocks", "U8", {2, 4, 2, 16}, 1},
                 {x + "gate_up_proj_scales", "U8", {2, 4, 2}, 1},
                 {x + "gate_up_proj_bias", "BF16", {2, 4}, 2},
                 // DeepSeek FP8 with 128x128 block scales: [200, 300] -> grid [2, 3]
                 {"model.layers.0.self_attn.o_proj.weight", "F8_E4M3", {200, 300}, 1},
                 {"model.layers.0.self_attn.o_proj.weight_scale_inv", "F32", {2, 3}, 4},
                 // ModelOpt NVFP4 [N=8, K=32]: U8 [8, 16] + F8 [8, 2]
                 {"model.layers.1.self_attn.q_proj.weight", "U8", {8, 16}, 1},
                 {"model.layers.1.self_attn.q_proj.weight_scale", "F8_E4M3", {8, 2}, 1},
                 // ModelOpt BMM NVFP4 [E=2, K=32, N=4]: U8 [2, 16, 4] + F8 [2, 2, 4]
                 {"model.layers.1.mlp.experts.down_proj", "U8", {2, 16, 4}, 1},
                 {"model.layers.1.mlp.experts.down_proj_weight_scale", "F8_E4M3", {2, 2, 4}, 1},
                 // compressed-tensors NVFP4 [N=8, K=32]: weight_packed + weight_scale
                 {"model.layers.1.self_attn.k_proj.weight_packed", "U8", {8, 16}, 1},
                 {"model.layers.1.self_attn.k_proj.weight_scale", "F8_E4M3", {8, 2}, 1},
                 // Not encodings: a lone _blocks of the wrong shape, a plain U8 tensor.
                 {"model.other_blocks", "U8", {4, 8}, 1},
                 {"model.flags", "U8", {8}, 1},
             }));
  write_file(t / "config.json",
             R"({"model_type":"gpt_oss","quantization_config":{"quant_method":"mxfp4"}})");
  auto r = inspect(t.path());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("encoded weights (5):"));
  EXPECT_THAT(r.output, ::testing::ContainsRegex(
                            "model\\.layers\\.0\\.mlp\\.experts\\.gate_up_proj +\\[2,4,64\\] +"
                            "MXFP4 \\(E2M1, E8M0 scales per 32\\)"));
  EXPECT_THAT(r.output, ::testing::ContainsRegex(
                            "self_attn\\.o_proj\\.weight +\\[200,300\\] +FP8 E4M3 \\(block-scaled "
                            "128x128"));
  EXPECT_THAT(r.output, ::testing::ContainsRegex("q_proj +\\[8,32\\] +NVFP4"));
  EXPECT_THAT(r.output, ::testing::ContainsRegex("experts\\.down_proj +\\[2,32,4\\] +NVFP4"));
  // The tensor rows say which part they are.
  EXPECT_THAT(r.output, ::testing::ContainsRegex(
                            "gate_up_proj_scales +U8 +\\[2,4,2\\] +16  model\\.safetensors  MXFP4 "
                            "\\(E2M1, E8M0 scales per 32\\) scales of \\[2,4,64\\]"));

  auto j = run_command(quote(testing::fp4kit_binary()) + " inspect --json " +
                       quote(t.path().string()) + " 2>/dev/null");
  ASSERT_EQ(j.exit_code, 0) << j.output;
  const auto doc = nlohmann::json::parse(j.output);
  ASSERT_EQ(doc["encoded_weights"].size(), 5u) << doc["encoded_weights"].dump(1);
  std::map<std::string, nlohmann::json> by_name;
  for (const auto& e : doc["encoded_weights"]) by_name[e["name"]] = e;
  const auto& mx = by_name.at(x + "gate_up_proj");
  EXPECT_EQ(mx["format"], "MXFP4");
  EXPECT_EQ(mx["description"], "MXFP4 (E2M1, E8M0 scales per 32)");
  EXPECT_EQ(mx["logical_shape"], nlohmann::json::array({2, 4, 64}));
  EXPECT_EQ(mx["codes"], x + "gate_up_proj_blocks");
  EXPECT_EQ(mx["scales"], x + "gate_up_proj_scales");
  EXPECT_EQ(by_name.at("model.layers.0.self_attn.o_proj.weight")["format"], "FP8_BLOCK");
  EXPECT_EQ(by_name.at("model.layers.1.self_attn.q_proj")["logical_shape"],
            nlohmann::json::array({8, 32}));
  EXPECT_EQ(by_name.at("model.layers.1.self_attn.k_proj")["codes"],
            "model.layers.1.self_attn.k_proj.weight_packed");
  EXPECT_EQ(by_name.at("model.layers.1.self_attn.k_proj")["logical_shape"],
            nlohmann::json::array({8, 32}));
  EXPECT_EQ(by_name.at("model.layers.1.mlp.experts.down_proj")["logical_shape"],
            nlohmann::json::array({2, 32, 4}));
  for (const auto& tj : doc["tensors"]) {
    const std::string n = tj["name"];
    if (n == x + "gate_up_proj_blocks") {
      EXPECT_EQ(tj["encoding"]["part"], "codes");
      EXPECT_EQ(tj["encoding"]["weight"], x + "gate_up_proj");
      EXPECT_EQ(tj["encoding"]["logical_shape"], nlohmann::json::array({2, 4, 64}));
    }
    if (n == "model.other_blocks" || n == "model.flags" || n == x + "gate_up_proj_bias") {
      EXPECT_FALSE(tj.contains("encoding")) << n;
    }
  }
}

TEST(InspectCli, UsageErrorsExitTwo) {
  auto r = run_command(quote(testing::fp4kit_binary()) + " inspect");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = run_command(quote(testing::fp4kit_binary()) + " inspect a b --nope");
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

struct BadCase {
  const char* what;
  std::map<std::string, std::string> files;  // relative path -> bytes
  std::vector<std::string> expected;         // substrings of the message
};

std::string u8_tensor(const char* name, int begin, int end) {
  return std::string("\"") + name + R"(":{"dtype":"U8","shape":[)" + std::to_string(end - begin) +
         R"(],"data_offsets":[)" + std::to_string(begin) + "," + std::to_string(end) + "]}";
}

std::vector<BadCase> bad_cases() {
  const std::string two_shard_index =
      R"({"weight_map":{"a":"model-00001-of-00002.safetensors",)"
      R"("b":"model-00002-of-00002.safetensors"}})";
  const std::string shard_a = safetensors_image("{" + u8_tensor("a", 0, 2) + "}", "aa");
  const std::string shard_b = safetensors_image("{" + u8_tensor("b", 0, 2) + "}", "bb");
  return {
      {"empty file", {{"model.safetensors", ""}}, {"model.safetensors", "empty"}},
      {"truncated file", {{"model.safetensors", std::string("\x08\x00\x00\x00", 4)}},
       {"model.safetensors", "truncated"}},
      {"header length past end", {{"model.safetensors", testing::le64(4096) + "{}"}},
       {"model.safetensors", "past the end"}},
      {"non-JSON header", {{"model.safetensors", safetensors_image("{\"a\":", "")}},
       {"model.safetensors", "invalid JSON"}},
      {"offsets out of range",
       {{"model.safetensors", safetensors_image("{" + u8_tensor("w", 0, 9) + "}", "12")}},
       {"\"w\"", "outside the data area"}},
      {"overlapping tensors",
       {{"model.safetensors",
         safetensors_image("{" + u8_tensor("a", 0, 4) + "," + u8_tensor("b", 2, 6) + "}",
                           "123456")}},
       {"\"b\"", "overlaps", "\"a\""}},
      {"gap between tensors",
       {{"model.safetensors",
         safetensors_image("{" + u8_tensor("a", 0, 2) + "," + u8_tensor("b", 4, 6) + "}",
                           "123456")}},
       {"gap", "\"b\""}},
      {"size not matching shape",
       {{"model.safetensors",
         safetensors_image(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                           "12345678")}},
       {"\"w\"", "needs 12 bytes"}},
      {"duplicate names",
       {{"model.safetensors",
         safetensors_image("{" + u8_tensor("w", 0, 2) + "," + u8_tensor("w", 2, 4) + "}", "1234")}},
       {"model.safetensors", "duplicate name \"w\""}},
      {"overflowing shape",
       {{"model.safetensors",
         safetensors_image(
             R"({"w":{"dtype":"BF16","shape":[4294967296,2147483648],"data_offsets":[0,0]}})",
             "")}},
       {"\"w\"", "overflows"}},
      {"unknown dtype",
       {{"model.safetensors",
         safetensors_image(R"({"w":{"dtype":"Q4_K","shape":[2],"data_offsets":[0,2]}})", "12")}},
       {"\"w\"", "unknown dtype \"Q4_K\""}},
      {"index names a missing shard",
       {{"model-00001-of-00002.safetensors", shard_a},
        {"model.safetensors.index.json", two_shard_index}},
       {"model.safetensors.index.json", "\"b\"",
        "shard \"model-00002-of-00002.safetensors\" does not exist"}},
      {"index names a missing tensor",
       {{"model-00001-of-00002.safetensors", shard_a},
        {"model-00002-of-00002.safetensors", shard_b},
        {"model.safetensors.index.json",
         R"({"weight_map":{"a":"model-00001-of-00002.safetensors",)"
         R"("b":"model-00002-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}})"}},
       {"\"c\"", "has no such tensor"}},
      {"tensor listed in two shards",
       {{"model-00001-of-00002.safetensors", shard_a},
        {"model-00002-of-00002.safetensors", shard_b},
        {"model.safetensors.index.json",
         R"({"weight_map":{"a":"model-00001-of-00002.safetensors",)"
         R"("b":"model-00002-of-00002.safetensors","a":"model-00002-of-00002.safetensors"}})"}},
       {"model.safetensors.index.json", "duplicate name \"a\""}},
      {"tensor present in two shard files",
       {{"model-00001-of-00002.safetensors", shard_a},
        {"model-00002-of-00002.safetensors",
         safetensors_image("{" + u8_tensor("a", 0, 2) + "," + u8_tensor("b", 2, 4) + "}", "aabb")},
        {"model.safetensors.index.json", two_shard_index}},
       {"\"a\"", "two shards"}},
  };
}

TEST(InspectCli, EveryBadInputExitsOneWithSpecificMessage) {
  for (const BadCase& c : bad_cases()) {
    TempDir t;
    for (const auto& [rel, bytes] : c.files) write_file(t / rel, bytes);
    auto r = inspect(t.path());
    EXPECT_EQ(r.exit_code, 1) << c.what << "\n" << r.output;
    EXPECT_THAT(r.output, HasSubstr("fp4kit: error: ")) << c.what;
    for (const auto& s : c.expected) EXPECT_THAT(r.output, HasSubstr(s)) << c.what;
  }
}

}  // namespace
}  // namespace fp4kit
