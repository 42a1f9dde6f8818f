// ModelConfig::parse on the config shapes that broke other tools: architectures null / missing /
// empty, nested text_config, dtype spellings, wrong types.
#include <gtest/gtest.h>

#include <fstream>

#include "fp4kit/error.hpp"
#include "fp4kit/model/config.hpp"
#include "support/shared_data.hpp"

namespace fp4kit {
namespace {

using nlohmann::json;

TEST(ModelConfig, ArchitecturesNullMissingOrEmptyGiveEmptyList) {
  for (const char* text : {R"({"model_type":"llama","architectures":null})",
                           R"({"model_type":"llama"})",
                           R"({"model_type":"llama","architectures":[]})"}) {
    ModelConfig c = ModelConfig::parse(json::parse(text), "config.json");
    EXPECT_TRUE(c.architectures.empty()) << text;
    EXPECT_EQ(c.model_type, "llama");
  }
}

TEST(ModelConfig, EmptyObjectParsesWithDefaults) {
  ModelConfig c = ModelConfig::parse(json::object(), "x/config.json");
  EXPECT_EQ(c.model_type, "");
  EXPECT_EQ(c.hidden_size, 0);
  EXPECT_EQ(c.head_dim, 0);
  EXPECT_FALSE(c.tie_word_embeddings);
}

TEST(ModelConfig, NotAnObjectIsAnErrorNamingTheFile) {
  try {
    ModelConfig::parse(json::array(), "dir/config.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("dir/config.json"), std::string::npos);
  }
}

TEST(ModelConfig, DtypeFromTorchDtypeOrDtype) {
  EXPECT_EQ(ModelConfig::parse(json::parse(R"({"torch_dtype":"bfloat16"})"), "c").dtype, "bfloat16");
  EXPECT_EQ(ModelConfig::parse(json::parse(R"({"dtype":"float16"})"), "c").dtype, "float16");
  EXPECT_EQ(ModelConfig::parse(json::parse(R"({"torch_dtype":null})"), "c").dtype, "");
}

TEST(ModelConfig, HeadDimDefaultsToHiddenOverHeads) {
  auto c = ModelConfig::parse(json::parse(R"({"hidden_size":4096,"num_attention_heads":32})"), "c");
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.num_key_value_heads, 32);  // MHA when absent
  auto d = ModelConfig::parse(
      json::parse(R"({"hidden_size":2048,"num_attention_heads":32,"head_dim":128})"), "c");
  EXPECT_EQ(d.head_dim, 128);  // explicit wins (Qwen3: head_dim != hidden/heads)
  auto e = ModelConfig::parse(
      json::parse(R"({"hidden_size":64,"num_attention_heads":8,"head_dim":null})"), "c");
  EXPECT_EQ(e.head_dim, 8);
}

TEST(ModelConfig, ExpertCountUnderEachSpelling) {
  EXPECT_EQ(ModelConfig::parse(json::parse(R"({"num_experts":128})"), "c").num_experts, 128);
  EXPECT_EQ(ModelConfig::parse(json::parse(R"({"num_local_experts":8})"), "c").num_experts, 8);
  EXPECT_EQ(ModelConfig::parse(json::parse(R"({"n_routed_experts":256})"), "c").num_experts, 256);
}

TEST(ModelConfig, NestedTextConfigWrapper) {
  // Shape of a Qwen3.5-MoE config: outer multimodal wrapper, language model in text_config,
  // tie_word_embeddings and architectures outside.
  json j = json::parse(R"({
    "architectures": ["Qwen3_5MoeForConditionalGeneration"],
    "model_type": "qwen3_5_moe",
    "tie_word_embeddings": false,
    "text_config": {"model_type": "qwen3_5_moe_text", "hidden_size": 2048,
                    "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 256,
                    "num_hidden_layers": 40, "num_experts": 256, "num_experts_per_tok": 8,
                    "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512,
                    "dtype": "bfloat16",
                    "layer_types": ["linear_attention", "linear_attention", "linear_attention",
                                    "full_attention"]},
    "vision_config": {"hidden_size": 1152}})");
  ModelConfig c = ModelConfig::parse(j, "config.json");
  EXPECT_TRUE(c.has_text_config);
  EXPECT_EQ(c.outer_model_type, "qwen3_5_moe");
  EXPECT_EQ(c.model_type, "qwen3_5_moe_text");
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.num_experts, 256);
  EXPECT_EQ(c.head_dim, 256);
  EXPECT_EQ(c.dtype, "bfloat16");
  EXPECT_FALSE(c.tie_word_embeddings);
  ASSERT_EQ(c.layer_types.size(), 4u);
  EXPECT_EQ(c.layer_types[3], "full_attention");
  ASSERT_EQ(c.architectures.size(), 1u);
  EXPECT_EQ(c.text.value("hidden_size", 0), 2048);
}

TEST(ModelConfig, WrongTypeIsAnErrorNamingFileAndKey) {
  struct Case { const char* json; const char* key; };
  for (Case k : {Case{R"({"hidden_size":"64"})", "hidden_size"},
                 Case{R"({"architectures":{"a":1}})", "architectures"},
                 Case{R"({"architectures":[1]})", "architectures"},
                 Case{R"({"tie_word_embeddings":"yes"})", "tie_word_embeddings"},
                 Case{R"({"text_config":{"num_experts":[4]}})", "text_config.num_experts"},
                 Case{R"({"text_config":"qwen"})", "text_config"},
                 Case{R"({"hidden_size":64.5})", "hidden_size"},
                 Case{R"({"model_type":3})", "model_type"}}) {
    try {
      ModelConfig::parse(json::parse(k.json), "ckpt/config.json");
      ADD_FAILURE() << "no error for " << k.json;
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("ckpt/config.json"), std::string::npos) << msg;
      EXPECT_NE(msg.find(std::string("\"") + k.key + "\""), std::string::npos) << msg;
    }
  }
}

TEST(ModelConfig, DeepSeekFields) {
  auto c = ModelConfig::parse(json::parse(R"({"model_type":"deepseek_v3","n_routed_experts":256,
      "n_shared_experts":1,"first_k_dense_replace":3,"q_lora_rank":1536,"kv_lora_rank":512,
      "num_nextn_predict_layers":1,"num_hidden_layers":61})"), "c");
  EXPECT_EQ(c.num_experts, 256);
  EXPECT_EQ(c.n_shared_experts, 1);
  EXPECT_EQ(c.first_k_dense_replace, 3);
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.num_nextn_predict_layers, 1);
  auto lite = ModelConfig::parse(json::parse(R"({"q_lora_rank":null})"), "c");
  EXPECT_EQ(lite.q_lora_rank, 0);
}

TEST(ModelConfig, RealStoriesQwen2MoeConfig) {
  FP4KIT_REQUIRE_SHARED(path, "models/stories260k-qwen2moe/config.json");
  std::ifstream in(path);
  ModelConfig c = ModelConfig::parse(json::parse(in), path.string());
  EXPECT_EQ(c.model_type, "qwen2_moe");
  EXPECT_EQ(c.num_experts, 4);
  EXPECT_EQ(c.moe_intermediate_size, 48);
  EXPECT_EQ(c.shared_expert_intermediate_size, 16);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_TRUE(c.attention_bias);  // qkv_bias
  EXPECT_EQ(c.dtype, "bfloat16");
}

}  // namespace
}  // namespace fp4kit
