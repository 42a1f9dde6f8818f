// Tensor classification: role, layer, expert and MoE block from real Hugging Face names.
#include <gtest/gtest.h>

#include "fp4kit/model/arch_table.hpp"
#include "fp4kit/model/classify.hpp"

namespace fp4kit {
namespace {

ModelConfig cfg(const char* json) { return ModelConfig::parse(nlohmann::json::parse(json), "c"); }

TensorClass classify(const char* model_type, const std::string& name,
                     std::vector<uint64_t> shape, const char* extra = "") {
  static ModelConfig c;  // kept alive for the classifier
  c = cfg((std::string(R"({"model_type":")") + model_type + R"(","num_hidden_layers":4)" + extra +
           "}")
              .c_str());
  const ArchFamily* f = find_family(c.model_type, c.architectures);
  TensorClassifier k(f ? *f : generic_family(), c);
  return k.classify({name, DType::BF16, std::move(shape)});
}

TEST(FindFamily, ByModelTypeTextSuffixOrArchitecture) {
  ASSERT_NE(find_family("qwen3_moe", {}), nullptr);
  EXPECT_EQ(find_family("qwen3_moe", {})->name, "qwen3_moe");
  EXPECT_EQ(find_family("qwen3_5_moe_text", {})->name, "qwen3_5_moe");
  EXPECT_EQ(find_family("deepseek_v2", {})->name, "deepseek_v3");
  EXPECT_EQ(find_family("", {"MixtralForCausalLM"})->name, "mixtral");
  EXPECT_EQ(find_family("my_finetune", {"Qwen2ForCausalLM"})->name, "qwen2");
  EXPECT_EQ(find_family("gpt_oss", {})->name, "gpt_oss");
  EXPECT_EQ(find_family("llama4_text", {})->name, "llama4");
  EXPECT_EQ(find_family("", {"Llama4ForConditionalGeneration"})->name, "llama4");
  EXPECT_EQ(find_family("mystery_moe", {}), nullptr);
  EXPECT_EQ(find_family("", {}), nullptr);
  // Every family the issue names has a table.
  for (const char* t : {"llama", "mistral", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe",
                        "qwen3_next", "qwen3_5_moe", "mixtral", "deepseek_v3", "glm4_moe", "olmoe",
                        "gpt_oss", "llama4"})
    EXPECT_NE(find_family(t, {}), nullptr) << t;
}

TEST(Classify, ExpertIndexLayerAndBlock) {
  TensorClass c = classify("qwen3_moe", "model.layers.3.mlp.experts.117.down_proj.weight", {64, 32});
  EXPECT_EQ(c.role, Role::ExpertDown);
  EXPECT_EQ(c.layer, 3);
  EXPECT_EQ(c.expert, 117);
  EXPECT_EQ(c.module, "model.layers.3.mlp.experts.117.down_proj");
  EXPECT_EQ(c.moe_block, "model.layers.3.mlp");
  EXPECT_TRUE(c.linear_weight);
  EXPECT_TRUE(c.in_table);

  TensorClass m = classify("mixtral", "model.layers.0.block_sparse_moe.experts.7.w3.weight", {48, 64});
  EXPECT_EQ(m.role, Role::ExpertUp);
  EXPECT_EQ(m.expert, 7);
  EXPECT_EQ(m.moe_block, "model.layers.0.block_sparse_moe");
}

TEST(Classify, RoutersAndTheirLookalikes) {
  EXPECT_EQ(classify("qwen2_moe", "model.layers.0.mlp.gate.weight", {4, 64}).role, Role::Router);
  EXPECT_EQ(classify("qwen2_moe", "model.layers.0.mlp.gate_proj.weight", {128, 64}).role,
            Role::MlpGate);
  EXPECT_EQ(classify("qwen2_moe", "model.layers.0.mlp.shared_expert_gate.weight", {1, 64}).role,
            Role::SharedExpertGate);
  EXPECT_EQ(classify("deepseek_v3", "model.layers.3.mlp.gate.e_score_correction_bias", {4}).role,
            Role::RouterBias);
  EXPECT_EQ(classify("mixtral", "model.layers.0.block_sparse_moe.gate.weight", {4, 64}).role,
            Role::Router);
}

TEST(Classify, FusedExpertsWithoutWeightSuffix) {
  TensorClass c = classify("qwen3_5_moe", "model.language_model.layers.2.mlp.experts.gate_up_proj",
                           {8, 64, 64});
  EXPECT_EQ(c.role, Role::FusedExpertGateUp);
  EXPECT_EQ(c.layer, 2);
  EXPECT_EQ(c.expert, -1);
  EXPECT_EQ(c.moe_block, "model.language_model.layers.2.mlp");
  EXPECT_EQ(c.module, "model.language_model.layers.2.mlp.experts.gate_up_proj");
  EXPECT_TRUE(c.linear_weight);
}

TEST(Classify, OutsideTheLayers) {
  EXPECT_EQ(classify("llama", "model.embed_tokens.weight", {512, 64}).role, Role::Embedding);
  EXPECT_EQ(classify("llama", "lm_head.weight", {512, 64}).role, Role::LmHead);
  EXPECT_EQ(classify("llama", "model.norm.weight", {64}).role, Role::Norm);
  EXPECT_EQ(classify("chatglm", "transformer.output_layer.weight", {512, 64}).role, Role::LmHead);
  EXPECT_EQ(classify("qwen3_5_moe", "model.language_model.embed_tokens.weight", {512, 64}).role,
            Role::Embedding);
  TensorClass v = classify("qwen3_5_moe", "model.visual.blocks.0.attn.qkv.weight", {192, 64});
  EXPECT_EQ(v.role, Role::Vision);
  EXPECT_EQ(v.subtree, "model.visual");
  EXPECT_EQ(v.layer, -1);  // vision block 0 is not decoder layer 0
  EXPECT_TRUE(v.linear_weight);
  EXPECT_FALSE(classify("qwen3_5_moe", "model.visual.patch_embed.proj.weight", {64, 3, 2, 16, 16})
                   .linear_weight);
  EXPECT_EQ(classify("qwen3_next", "mtp.layers.0.self_attn.q_proj.weight", {64, 64}).role, Role::Mtp);
  // Layer index >= num_hidden_layers (4 here): DeepSeek-style MTP layer.
  TensorClass d = classify("deepseek_v3", "model.layers.4.self_attn.q_a_proj.weight", {32, 64});
  EXPECT_EQ(d.role, Role::Mtp);
  EXPECT_EQ(d.layer, 4);
  EXPECT_EQ(classify("deepseek_v3", "model.layers.3.self_attn.q_a_proj.weight", {32, 64}).role,
            Role::MlaQA);
}

TEST(Classify, LinearAttentionParts) {
  TensorClass qkv = classify("qwen3_5_moe", "model.layers.0.linear_attn.in_proj_qkv.weight", {96, 64});
  EXPECT_EQ(qkv.role, Role::LinearAttn);
  EXPECT_EQ(qkv.linear_attn, LinearAttnPart::InProj);
  EXPECT_EQ(classify("qwen3_5_moe", "model.layers.0.linear_attn.out_proj.weight", {64, 32}).linear_attn,
            LinearAttnPart::OutProj);
  TensorClass conv = classify("qwen3_next", "model.layers.0.linear_attn.conv1d.weight", {96, 1, 4});
  EXPECT_EQ(conv.role, Role::LinearAttn);
  EXPECT_FALSE(conv.linear_weight);
}

TEST(Classify, GenericNamesAndShapes) {
  EXPECT_TRUE(looks_like_linear_name("qkv_proj"));
  EXPECT_TRUE(looks_like_linear_name("fc2"));
  EXPECT_FALSE(looks_like_linear_name("c_attn"));  // GPT-2 Conv1D stores [K, N]
  TensorClass g = classify("unknown_lm", "transformer.h.2.mlp.fc1.weight", {128, 64});
  EXPECT_EQ(g.role, Role::OtherLinear);
  EXPECT_EQ(g.layer, 2);
  EXPECT_TRUE(g.linear_weight);
  EXPECT_EQ(classify("unknown_lm", "transformer.h.2.mlp.fc1.weight", {128}).role, Role::Other);
  EXPECT_EQ(classify("unknown_lm", "model.layers.0.self_attn.q_proj.bias", {64}).role, Role::Bias);
}

}  // namespace
}  // namespace fp4kit
