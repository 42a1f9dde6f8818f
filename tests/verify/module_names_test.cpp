// Names as loaders read them: roles, fusion groups (spec section 3), expert parsing, exclusion
// matching (ModelOpt fnmatch vs compressed-tensors "re:"). Expected values from the spec and the
// loader notes in docs/research/loaders-and-formats.md.
#include <gtest/gtest.h>

#include "fp4kit/verify/exclusion.hpp"
#include "fp4kit/verify/module_names.hpp"

namespace fp4kit::verify {
namespace {

Role role(const char* m, int dims = 2, int64_t layers = 0) {
  NameContext c;
  c.num_hidden_layers = layers;
  return classify_module(m, dims, c);
}

TEST(ModuleNames, Roles) {
  EXPECT_EQ(role("model.layers.0.self_attn.q_proj"), Role::AttnQ);
  EXPECT_EQ(role("model.layers.0.self_attn.o_proj"), Role::AttnO);
  EXPECT_EQ(role("model.layers.0.mlp.gate"), Role::Router);
  EXPECT_EQ(role("model.layers.0.block_sparse_moe.gate"), Role::Router);
  EXPECT_EQ(role("model.layers.0.mlp.router"), Role::Router);
  EXPECT_EQ(role("model.layers.0.block_sparse_moe.experts.3.w1"), Role::ExpertGate);
  EXPECT_EQ(role("model.layers.0.block_sparse_moe.experts.3.w3"), Role::ExpertUp);
  EXPECT_EQ(role("model.layers.0.block_sparse_moe.experts.3.w2"), Role::ExpertDown);
  EXPECT_EQ(role("model.layers.0.mlp.experts.17.up_proj"), Role::ExpertUp);
  EXPECT_EQ(role("model.layers.0.mlp.experts.gate_up_proj", 3), Role::FusedExpertGateUp);
  EXPECT_EQ(role("model.layers.0.mlp.shared_expert.gate_proj"), Role::SharedGate);
  EXPECT_EQ(role("model.layers.3.mlp.shared_experts.down_proj"), Role::SharedDown);
  EXPECT_EQ(role("model.layers.0.mlp.shared_expert_gate"), Role::SharedExpertGate);
  EXPECT_EQ(role("model.layers.0.mlp.gate_proj"), Role::MlpGate);
  EXPECT_EQ(role("model.layers.0.self_attn.q_a_proj"), Role::MlaQA);
  EXPECT_EQ(role("model.layers.0.self_attn.kv_a_proj_with_mqa"), Role::MlaKVA);
  EXPECT_EQ(role("model.layers.0.input_layernorm"), Role::Norm);
  EXPECT_EQ(role("model.layers.0.self_attn.kv_a_layernorm"), Role::Norm);
  EXPECT_EQ(role("model.embed_tokens"), Role::Embedding);
  EXPECT_EQ(role("lm_head"), Role::LmHead);
  EXPECT_EQ(role("model.visual.blocks.0.attn.qkv"), Role::Vision);
  EXPECT_EQ(role("model.language_model.layers.0.linear_attn.in_proj_qkv"), Role::LinearAttn);
  EXPECT_EQ(role("mtp.layers.0.mlp.gate_proj"), Role::Mtp);
  // DeepSeek stores its MTP layer after the last decoder layer.
  EXPECT_EQ(role("model.layers.61.self_attn.q_a_proj", 2, 61), Role::Mtp);
  EXPECT_EQ(role("model.layers.60.self_attn.q_a_proj", 2, 61), Role::MlaQA);
}

TEST(ModuleNames, ExpertParsing) {
  const auto e = parse_expert("model.language_model.layers.7.mlp.experts.12.down_proj");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->moe, "model.language_model.layers.7.mlp.experts");
  EXPECT_EQ(e->index, 12);
  EXPECT_EQ(e->proj, "down_proj");
  EXPECT_FALSE(parse_expert("model.layers.0.mlp.experts.gate_up_proj"));
  EXPECT_FALSE(parse_expert("model.layers.0.mlp.shared_experts.gate_proj"));
  EXPECT_EQ(layer_index("model.language_model.layers.7.mlp.gate"), 7);
  EXPECT_EQ(layer_index("lm_head"), -1);
}

TEST(ModuleNames, FusionGroups) {
  auto key = [](const char* m, bool kv_a = false) {
    return fusion_key(m, role(m), kv_a);
  };
  // q/k/v of one layer together, not with another layer's.
  EXPECT_EQ(key("model.layers.0.self_attn.q_proj"), key("model.layers.0.self_attn.v_proj"));
  EXPECT_NE(key("model.layers.0.self_attn.q_proj"), key("model.layers.1.self_attn.q_proj"));
  EXPECT_EQ(key("model.layers.0.self_attn.o_proj"), "");
  // gate/up of every routed expert separately (Mixtral w1/w3 too), dense and shared MLPs.
  EXPECT_EQ(key("model.layers.0.mlp.experts.5.gate_proj"), key("model.layers.0.mlp.experts.5.up_proj"));
  EXPECT_NE(key("model.layers.0.mlp.experts.5.gate_proj"), key("model.layers.0.mlp.experts.6.up_proj"));
  EXPECT_EQ(key("model.layers.0.block_sparse_moe.experts.2.w1"),
            key("model.layers.0.block_sparse_moe.experts.2.w3"));
  EXPECT_EQ(key("model.layers.0.block_sparse_moe.experts.2.w2"), "");
  EXPECT_EQ(key("model.layers.0.mlp.shared_experts.gate_proj"),
            key("model.layers.0.mlp.shared_experts.up_proj"));
  EXPECT_NE(key("model.layers.0.mlp.shared_experts.gate_proj"), key("model.layers.0.mlp.experts.0.gate_proj"));
  EXPECT_EQ(key("model.layers.0.mlp.gate_proj"), key("model.layers.0.mlp.up_proj"));
  // DeepSeek MLA: q_a_proj with kv_a_proj_with_mqa; without q-LoRA, q_proj with kv_a_proj_with_mqa.
  EXPECT_EQ(key("model.layers.0.self_attn.q_a_proj"), key("model.layers.0.self_attn.kv_a_proj_with_mqa"));
  EXPECT_EQ(key("model.layers.0.self_attn.q_proj", true), key("model.layers.0.self_attn.kv_a_proj_with_mqa"));
  EXPECT_EQ(key("model.layers.0.self_attn.q_b_proj"), "");
  // Qwen3.5 linear attention (when quantized): in_proj_qkv with in_proj_z.
  EXPECT_EQ(key("model.layers.0.linear_attn.in_proj_qkv"), key("model.layers.0.linear_attn.in_proj_z"));
  EXPECT_NE(key("model.layers.0.linear_attn.in_proj_qkv"), key("model.layers.0.linear_attn.in_proj_b"));
}

TEST(ModuleNames, TensorParallelSplit) {
  EXPECT_EQ(tp_split(Role::AttnQ, "x.q_proj"), TpSplit::Column);
  EXPECT_EQ(tp_split(Role::ExpertUp, "x.up_proj"), TpSplit::Column);
  EXPECT_EQ(tp_split(Role::AttnO, "x.o_proj"), TpSplit::Row);
  EXPECT_EQ(tp_split(Role::ExpertDown, "x.w2"), TpSplit::Row);
  EXPECT_EQ(tp_split(Role::MlaQA, "x.q_a_proj"), TpSplit::None);  // replicated in vLLM
}

TEST(Exclusions, ModelOptFnmatchAndParents) {
  ExclusionList l({"lm_head", "model.layers.*.mlp.gate", "model.visual*"}, ExclusionStyle::ModelOpt);
  EXPECT_EQ(l.match("lm_head"), 0);
  EXPECT_EQ(l.match("model.layers.12.mlp.gate"), 1);  // '*' crosses dots in fnmatch
  EXPECT_EQ(l.match("model.layers.12.mlp.gate_proj"), -1);
  EXPECT_EQ(l.match("model.layers.12.mlp.experts.0.gate_proj"), -1);
  EXPECT_EQ(l.match("model.visual.blocks.0.attn.qkv"), 2);
  ExclusionList p({"model.layers.0.self_attn"}, ExclusionStyle::ModelOpt);
  EXPECT_EQ(p.match("model.layers.0.self_attn.q_proj"), 0);  // a parent module excludes children
  EXPECT_EQ(p.match("model.layers.0.self_attn_extra"), -1);
  // vLLM's legacy substring rule: "...mlp.gate" is a substring of "...mlp.gate_proj".
  ExclusionList s({"model.layers.1.mlp.gate"}, ExclusionStyle::ModelOpt);
  EXPECT_EQ(s.match("model.layers.1.mlp.gate_proj"), -1);
  EXPECT_EQ(s.substring_only("model.layers.1.mlp.gate_proj"), 0);
  EXPECT_EQ(s.substring_only("model.layers.1.mlp.gate"), -1);
}

TEST(Exclusions, CompressedTensorsExactOrRegexAtStart) {
  ExclusionList l({"lm_head", "re:.*mlp\\.gate$", "re:layers"}, ExclusionStyle::CompressedTensors);
  EXPECT_EQ(l.match("lm_head"), 0);
  EXPECT_EQ(l.match("model.lm_head"), -1);  // exact names only
  EXPECT_EQ(l.match("model.layers.3.mlp.gate"), 1);
  EXPECT_EQ(l.match("model.layers.3.mlp.gate_proj"), -1);
  EXPECT_EQ(l.match("model.layers.3.self_attn.q_proj"), -1);  // re.match anchors at the start
  EXPECT_EQ(l.match("layers.3.self_attn.q_proj"), 2);
  ExclusionList bad({"re:(unclosed"}, ExclusionStyle::CompressedTensors);
  EXPECT_EQ(bad.match("anything"), -1);
}

}  // namespace
}  // namespace fp4kit::verify
