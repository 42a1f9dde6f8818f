// MoE families: routed experts per expert and fused 3-D, shared experts, routers, MLA, MTP,
// linear attention, multimodal wrappers. Expected plans written from spec sections 3, 4 and 7.
#include <gtest/gtest.h>

#include <set>

#include "fp4kit/error.hpp"
#include "plan/plan_test_util.hpp"

namespace fp4kit {
namespace {

using namespace fp4kit::testing;

std::string ex(int layer, int e, const char* proj) {
  return "model.layers." + std::to_string(layer) + ".mlp.experts." + std::to_string(e) + "." + proj;
}

// Spec 3 for a per-expert MoE layer: expert e's gate/up share a weight group of exactly those
// two, distinct for every expert; all gate/up of the layer (and `extra_gate_up`, the shared
// expert's) share one input group; all routed downs share another, with their own s2 each.
void expect_moe_layer_groups(const Plan& p, int layer, int n, const char* gate, const char* up,
                             const char* down, const std::string& block,
                             const std::vector<std::string>& extra_gate_up = {}) {
  auto name = [&](int e, const char* proj) {
    return block + ".experts." + std::to_string(e) + "." + proj;
  };
  std::set<int64_t> weight_groups;
  std::vector<std::string> all_gate_up = extra_gate_up;
  std::vector<std::string> all_down;
  const int64_t gu_input = ENTRY(p, name(0, gate)).input_group;
  const int64_t down_input = ENTRY(p, name(0, down)).input_group;
  ASSERT_GE(gu_input, 0);
  ASSERT_GE(down_input, 0);
  EXPECT_NE(gu_input, down_input);
  for (int e = 0; e < n; ++e) {
    const PlanEntry& g = ENTRY(p, name(e, gate));
    const PlanEntry& u = ENTRY(p, name(e, up));
    const PlanEntry& d = ENTRY(p, name(e, down));
    for (const PlanEntry* x : {&g, &u, &d}) {
      EXPECT_EQ(x->action, Action::Quantize) << x->name;
      EXPECT_EQ(x->expert, e) << x->name;
      EXPECT_EQ(x->layer, layer) << x->name;
    }
    EXPECT_EQ(g.role, Role::ExpertGate);
    EXPECT_EQ(u.role, Role::ExpertUp);
    EXPECT_EQ(d.role, Role::ExpertDown);
    ASSERT_GE(g.weight_group, 0);
    EXPECT_EQ(g.weight_group, u.weight_group) << "expert " << e;
    EXPECT_EQ(member_names(p, g.weight_group),
              (std::vector<std::string>{name(e, gate), name(e, up)}));
    EXPECT_EQ(p.groups[g.weight_group].kind, "weight");
    EXPECT_TRUE(weight_groups.insert(g.weight_group).second) << "expert " << e << " shares s2";
    EXPECT_EQ(d.weight_group, -1);
    EXPECT_EQ(g.input_group, gu_input);
    EXPECT_EQ(u.input_group, gu_input);
    EXPECT_EQ(d.input_group, down_input);
    all_gate_up.push_back(name(e, gate));
    all_gate_up.push_back(name(e, up));
    all_down.push_back(name(e, down));
  }
  std::sort(all_gate_up.begin(), all_gate_up.end());
  std::sort(all_down.begin(), all_down.end());
  EXPECT_EQ(member_names(p, gu_input), all_gate_up);
  EXPECT_EQ(member_names(p, down_input), all_down);
  EXPECT_EQ(p.groups[gu_input].kind, "input");
}

Tensors qwen3_moe_tensors(int layers, int experts) {
  Tensors t;
  t.add("model.embed_tokens.weight", {256, 64});
  t.add("lm_head.weight", {256, 64});
  t.add("model.norm.weight", {64});
  for (int l = 0; l < layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    add_attention(t, p, false, true);
    add_experts(t, p, experts);
  }
  return t;
}

const char* kQwen3MoeConfig = R"({"architectures":["Qwen3MoeForCausalLM"],"model_type":"qwen3_moe",
    "hidden_size":64,"num_hidden_layers":2,"num_experts":4,"moe_intermediate_size":32})";

TEST(MoePlan, Qwen3MoePerExpert) {
  Plan p = build_plan_from_tensors(qwen3_moe_tensors(2, 4).sorted(), config_of(kQwen3MoeConfig), {});
  EXPECT_EQ(p.family, "qwen3_moe");
  EXPECT_EQ(count_action(p, Action::Quantize), 2u * (4 + 12));
  for (int l = 0; l < 2; ++l)
    expect_moe_layer_groups(p, l, 4, "gate_proj", "up_proj", "down_proj",
                            "model.layers." + std::to_string(l) + ".mlp");
  // Layers do not share input groups.
  EXPECT_NE(ENTRY(p, ex(0, 0, "gate_proj")).input_group,
            ENTRY(p, ex(1, 0, "gate_proj")).input_group);
  const PlanEntry& router = ENTRY(p, "model.layers.0.mlp.gate.weight");
  EXPECT_EQ(router.action, Action::Keep);
  EXPECT_EQ(router.role, Role::Router);
  EXPECT_NE(router.reason.find("router"), std::string::npos);
  EXPECT_EQ(p.exclude_modules,
            (std::vector<std::string>{"lm_head", "model.embed_tokens", "model.layers.0.mlp.gate",
                                      "model.layers.1.mlp.gate"}));
}

TEST(MoePlan, Qwen2MoeSharedExpertJoinsTheGateUpInputGroup) {
  Tensors t;
  t.add("model.embed_tokens.weight", {256, 64});
  add_attention(t, "model.layers.0.", true);
  add_experts(t, "model.layers.0.", 4);
  t.add("model.layers.0.mlp.shared_expert.gate_proj.weight", {16, 64});
  t.add("model.layers.0.mlp.shared_expert.up_proj.weight", {16, 64});
  t.add("model.layers.0.mlp.shared_expert.down_proj.weight", {64, 16});
  t.add("model.layers.0.mlp.shared_expert_gate.weight", {1, 64});
  Plan p = build_plan_from_tensors(
      t.sorted(), config_of(R"({"model_type":"qwen2_moe","num_experts":4,"hidden_size":64})"), {});
  EXPECT_EQ(p.family, "qwen2_moe");
  const std::string sh = "model.layers.0.mlp.shared_expert.";
  expect_moe_layer_groups(p, 0, 4, "gate_proj", "up_proj", "down_proj", "model.layers.0.mlp",
                          {sh + "gate_proj", sh + "up_proj"});
  const PlanEntry& sg = ENTRY(p, sh + "gate_proj");
  EXPECT_EQ(sg.role, Role::SharedGate);
  EXPECT_EQ(member_names(p, sg.weight_group),
            (std::vector<std::string>{sh + "gate_proj", sh + "up_proj"}));
  const PlanEntry& sd = ENTRY(p, sh + "down_proj");
  EXPECT_EQ(sd.action, Action::Quantize);  // K = 16
  EXPECT_EQ(sd.weight_group, -1);
  EXPECT_EQ(member_names(p, sd.input_group), std::vector<std::string>{sh + "down_proj"});
  const PlanEntry& seg = ENTRY(p, "model.layers.0.mlp.shared_expert_gate.weight");
  EXPECT_EQ(seg.action, Action::Keep);
  EXPECT_EQ(seg.role, Role::SharedExpertGate);
  EXPECT_EQ(p.exclude_modules,
            (std::vector<std::string>{"lm_head", "model.embed_tokens", "model.layers.0.mlp.gate",
                                      "model.layers.0.mlp.shared_expert_gate"}));
}

TEST(MoePlan, MixtralW1W3ShareAndW2Alone) {
  Tensors t;
  t.add("model.embed_tokens.weight", {256, 64});
  add_attention(t, "model.layers.0.");
  t.add("model.layers.0.block_sparse_moe.gate.weight", {4, 64});
  for (int e = 0; e < 4; ++e) {
    std::string p = "model.layers.0.block_sparse_moe.experts." + std::to_string(e) + ".";
    t.add(p + "w1.weight", {48, 64});
    t.add(p + "w3.weight", {48, 64});
    t.add(p + "w2.weight", {64, 48});
  }
  Plan p = build_plan_from_tensors(
      t.sorted(), config_of(R"({"model_type":"mixtral","num_local_experts":4})"), {});
  EXPECT_EQ(p.family, "mixtral");
  expect_moe_layer_groups(p, 0, 4, "w1", "w3", "w2", "model.layers.0.block_sparse_moe");
  EXPECT_EQ(ENTRY(p, "model.layers.0.block_sparse_moe.gate.weight").role, Role::Router);
  EXPECT_EQ(p.exclude_modules,
            (std::vector<std::string>{"lm_head", "model.embed_tokens",
                                      "model.layers.0.block_sparse_moe.gate"}));
}

void add_mla(Tensors& t, const std::string& p, bool q_lora) {
  if (q_lora) {
    t.add(p + "self_attn.q_a_proj.weight", {32, 64});
    t.add(p + "self_attn.q_a_layernorm.weight", {32});
    t.add(p + "self_attn.q_b_proj.weight", {96, 32});
  } else {
    t.add(p + "self_attn.q_proj.weight", {96, 64});
  }
  t.add(p + "self_attn.kv_a_proj_with_mqa.weight", {40, 64});
  t.add(p + "self_attn.kv_a_layernorm.weight", {32});
  t.add(p + "self_attn.kv_b_proj.weight", {128, 32});
  t.add(p + "self_attn.o_proj.weight", {64, 64});
  t.add(p + "input_layernorm.weight", {64});
  t.add(p + "post_attention_layernorm.weight", {64});
}

void add_deepseek_moe(Tensors& t, const std::string& p) {
  add_experts(t, p, 4);
  t.add(p + "mlp.gate.e_score_correction_bias", {4}, DType::F32);
  t.add(p + "mlp.shared_experts.gate_proj.weight", {32, 64});
  t.add(p + "mlp.shared_experts.up_proj.weight", {32, 64});
  t.add(p + "mlp.shared_experts.down_proj.weight", {64, 32});
}

const char* kDeepSeekConfig = R"({"architectures":["DeepseekV3ForCausalLM"],
    "model_type":"deepseek_v3","hidden_size":64,"num_hidden_layers":2,"n_routed_experts":4,
    "n_shared_experts":1,"first_k_dense_replace":1,"q_lora_rank":32,"kv_lora_rank":32,
    "num_nextn_predict_layers":1})";

Tensors deepseek_tensors() {
  Tensors t;
  t.add("model.embed_tokens.weight", {256, 64});
  t.add("lm_head.weight", {256, 64});
  t.add("model.norm.weight", {64});
  add_mla(t, "model.layers.0.", true);
  add_dense_mlp(t, "model.layers.0.");
  add_mla(t, "model.layers.1.", true);
  add_deepseek_moe(t, "model.layers.1.");
  // MTP layer = layers.num_hidden_layers: a whole extra layer plus its own head parts.
  const std::string m = "model.layers.2.";
  add_mla(t, m, true);
  add_deepseek_moe(t, m);
  t.add(m + "embed_tokens.weight", {256, 64});
  t.add(m + "enorm.weight", {64});
  t.add(m + "hnorm.weight", {64});
  t.add(m + "eh_proj.weight", {64, 128});
  t.add(m + "shared_head.norm.weight", {64});
  t.add(m + "shared_head.head.weight", {256, 64});
  return t;
}

TEST(MoePlan, DeepSeekV3MlaDenseFirstLayersSharedExpertsAndMtp) {
  Plan p = build_plan_from_tensors(deepseek_tensors().sorted(), config_of(kDeepSeekConfig), {});
  EXPECT_EQ(p.family, "deepseek_v3");
  // MLA: q_a_proj and kv_a_proj_with_mqa read the same hidden state -> one group (both scales).
  const PlanEntry& qa = ENTRY(p, "model.layers.0.self_attn.q_a_proj");
  EXPECT_EQ(qa.role, Role::MlaQA);
  EXPECT_EQ(qa.weight_group, qa.input_group);
  EXPECT_EQ(member_names(p, qa.weight_group),
            (std::vector<std::string>{"model.layers.0.self_attn.kv_a_proj_with_mqa",
                                      "model.layers.0.self_attn.q_a_proj"}));
  for (const char* lone : {"model.layers.0.self_attn.q_b_proj", "model.layers.0.self_attn.kv_b_proj",
                           "model.layers.0.self_attn.o_proj"}) {
    EXPECT_EQ(ENTRY(p, lone).weight_group, -1) << lone;
    EXPECT_EQ(member_names(p, ENTRY(p, lone).input_group), std::vector<std::string>{lone});
  }
  // Layer 0 is dense (first_k_dense_replace = 1).
  EXPECT_EQ(ENTRY(p, "model.layers.0.mlp.gate_proj").role, Role::MlpGate);
  // Layer 1: experts and shared experts.
  const std::string sh = "model.layers.1.mlp.shared_experts.";
  expect_moe_layer_groups(p, 1, 4, "gate_proj", "up_proj", "down_proj", "model.layers.1.mlp",
                          {sh + "gate_proj", sh + "up_proj"});
  const PlanEntry& bias = ENTRY(p, "model.layers.1.mlp.gate.e_score_correction_bias");
  EXPECT_EQ(bias.action, Action::Keep);
  EXPECT_EQ(bias.role, Role::RouterBias);
  EXPECT_EQ(bias.source_dtype, DType::F32);
  // Layer 2 = MTP: nothing quantized, its Linears listed for the loader.
  for (const auto& e : p.entries)
    if (e.layer == 2) {
      EXPECT_EQ(e.action, Action::Keep) << e.name;
      EXPECT_NE(e.reason.find("MTP"), std::string::npos) << e.name;
    }
  EXPECT_TRUE(contains(p.exclude_modules, "model.layers.2.eh_proj"));
  EXPECT_TRUE(contains(p.exclude_modules, "model.layers.2.mlp.experts.3.down_proj"));
  EXPECT_TRUE(contains(p.exclude_modules, "model.layers.2.shared_head.head"));
  EXPECT_FALSE(contains(p.exclude_modules, "model.layers.2.embed_tokens"));
  EXPECT_FALSE(any_contains(p.exclude_modules, "norm"));
  EXPECT_TRUE(contains(p.exclude_modules, "model.layers.1.mlp.gate"));
  EXPECT_NO_THROW(validate_exclude_list(p));
}

TEST(MoePlan, DeepSeekWithoutQLoraGroupsQProjWithKvA) {
  Tensors t;
  add_mla(t, "model.layers.0.", false);
  add_dense_mlp(t, "model.layers.0.");
  Plan p = build_plan_from_tensors(
      t.sorted(), config_of(R"({"model_type":"deepseek_v2","q_lora_rank":null,"num_hidden_layers":1})"),
      {});
  EXPECT_EQ(p.family, "deepseek_v3");
  const PlanEntry& q = ENTRY(p, "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(member_names(p, q.weight_group),
            (std::vector<std::string>{"model.layers.0.self_attn.kv_a_proj_with_mqa",
                                      "model.layers.0.self_attn.q_proj"}));
  EXPECT_EQ(q.input_group, q.weight_group);
}

TEST(MoePlan, Glm4MoeAndOlmoe) {
  {
    Tensors t;
    add_attention(t, "model.layers.0.", true);
    add_dense_mlp(t, "model.layers.0.");
    add_attention(t, "model.layers.1.", true);
    add_deepseek_moe(t, "model.layers.1.");
    add_attention(t, "model.layers.2.", true);  // MTP layer
    t.add("model.layers.2.eh_proj.weight", {64, 128});
    Plan p = build_plan_from_tensors(
        t.sorted(),
        config_of(R"({"model_type":"glm4_moe","n_routed_experts":4,"num_hidden_layers":2,
                      "first_k_dense_replace":1,"num_nextn_predict_layers":1})"),
        {});
    EXPECT_EQ(p.family, "glm4_moe");
    expect_moe_layer_groups(p, 1, 4, "gate_proj", "up_proj", "down_proj", "model.layers.1.mlp",
                            {"model.layers.1.mlp.shared_experts.gate_proj",
                             "model.layers.1.mlp.shared_experts.up_proj"});
    EXPECT_EQ(ENTRY(p, "model.layers.2.self_attn.q_proj.weight").action, Action::Keep);
    EXPECT_EQ(ENTRY(p, "model.layers.1.mlp.gate.e_score_correction_bias").role, Role::RouterBias);
  }
  {
    Tensors t;
    add_attention(t, "model.layers.0.", false, true);
    add_experts(t, "model.layers.0.", 8);
    Plan p = build_plan_from_tensors(t.sorted(),
                                     config_of(R"({"model_type":"olmoe","num_experts":8})"), {});
    EXPECT_EQ(p.family, "olmoe");
    expect_moe_layer_groups(p, 0, 8, "gate_proj", "up_proj", "down_proj", "model.layers.0.mlp");
  }
}

// Qwen3-Next: linear-attention layers (in_proj_qkvz / in_proj_ba), MoE with shared expert, mtp.*.
Tensors qwen3_next_tensors() {
  Tensors t;
  t.add("model.embed_tokens.weight", {256, 64});
  t.add("lm_head.weight", {256, 64});
  const std::string l0 = "model.layers.0.";
  t.add(l0 + "linear_attn.in_proj_qkvz.weight", {192, 64});
  t.add(l0 + "linear_attn.in_proj_ba.weight", {8, 64});
  t.add(l0 + "linear_attn.conv1d.weight", {128, 1, 4});
  t.add(l0 + "linear_attn.A_log", {4}, DType::F32);
  t.add(l0 + "linear_attn.dt_bias", {4});
  t.add(l0 + "linear_attn.norm.weight", {16});
  t.add(l0 + "linear_attn.out_proj.weight", {64, 64});
  t.add(l0 + "input_layernorm.weight", {64});
  add_experts(t, l0, 4);
  t.add(l0 + "mlp.shared_expert.gate_proj.weight", {32, 64});
  t.add(l0 + "mlp.shared_expert.up_proj.weight", {32, 64});
  t.add(l0 + "mlp.shared_expert.down_proj.weight", {64, 32});
  t.add(l0 + "mlp.shared_expert_gate.weight", {1, 64});
  add_attention(t, "model.layers.1.", false, true);
  add_dense_mlp(t, "model.layers.1.");
  t.add("mtp.fc.weight", {64, 128});
  t.add("mtp.layers.0.self_attn.q_proj.weight", {64, 64});
  t.add("mtp.layers.0.mlp.experts.0.gate_proj.weight", {32, 64});
  t.add("mtp.pre_fc_norm_embedding.weight", {64});
  return t;
}

const char* kQwen3NextConfig = R"({"model_type":"qwen3_next","num_experts":4,"hidden_size":64,
    "num_hidden_layers":2,"layer_types":["linear_attention","full_attention"]})";

TEST(MoePlan, Qwen3NextKeepsLinearAttentionAndMtpByDefault) {
  Plan p = build_plan_from_tensors(qwen3_next_tensors().sorted(), config_of(kQwen3NextConfig), {});
  EXPECT_EQ(p.family, "qwen3_next");
  const std::string la = "model.layers.0.linear_attn.";
  for (const char* n : {"in_proj_qkvz.weight", "in_proj_ba.weight", "conv1d.weight", "A_log",
                        "out_proj.weight", "norm.weight"}) {
    const PlanEntry& e = ENTRY(p, la + n);
    EXPECT_EQ(e.action, Action::Keep) << n;
    EXPECT_EQ(e.role, Role::LinearAttn) << n;
  }
  for (const char* n : {"in_proj_qkvz", "in_proj_ba", "out_proj", "conv1d"})
    EXPECT_TRUE(contains(p.exclude_modules, la + n)) << n;
  EXPECT_FALSE(contains(p.exclude_modules, la + "norm"));
  for (const char* n : {"mtp.fc.weight", "mtp.layers.0.self_attn.q_proj.weight",
                        "mtp.layers.0.mlp.experts.0.gate_proj.weight"}) {
    EXPECT_EQ(ENTRY(p, n).action, Action::Keep) << n;
    EXPECT_EQ(ENTRY(p, n).role, Role::Mtp) << n;
  }
  EXPECT_TRUE(contains(p.exclude_modules, "mtp.fc"));
  expect_moe_layer_groups(p, 0, 4, "gate_proj", "up_proj", "down_proj", "model.layers.0.mlp",
                          {"model.layers.0.mlp.shared_expert.gate_proj",
                           "model.layers.0.mlp.shared_expert.up_proj"});
  EXPECT_EQ(ENTRY(p, "model.layers.1.self_attn.q_proj").action, Action::Quantize);
}

TEST(MoePlan, Qwen3NextLinearAttentionOnRequest) {
  PlanOptions o;
  o.quantize_linear_attn = true;
  Plan p = build_plan_from_tensors(qwen3_next_tensors().sorted(), config_of(kQwen3NextConfig), o);
  const std::string la = "model.layers.0.linear_attn.";
  const PlanEntry& qkvz = ENTRY(p, la + "in_proj_qkvz");
  EXPECT_EQ(qkvz.action, Action::Quantize);
  ASSERT_GE(qkvz.weight_group, 0);
  EXPECT_EQ(qkvz.input_group, qkvz.weight_group);
  EXPECT_EQ(ENTRY(p, la + "out_proj").action, Action::Quantize);
  EXPECT_EQ(ENTRY(p, la + "out_proj").weight_group, -1);
  EXPECT_EQ(ENTRY(p, la + "in_proj_ba.weight").action, Action::Keep);
  EXPECT_EQ(ENTRY(p, la + "conv1d.weight").action, Action::Keep);
  EXPECT_FALSE(contains(p.exclude_modules, la + "in_proj_qkvz"));
}

// Qwen3.5-MoE: multimodal wrapper (text_config, model.language_model. prefix), fused 3-D experts
// without .weight, gated-delta-net layers with in_proj_qkv/in_proj_z, vision tower, mtp.*.
Tensors qwen3_5_tensors() {
  Tensors t;
  const std::string lm = "model.language_model.";
  t.add(lm + "embed_tokens.weight", {256, 64});
  t.add(lm + "norm.weight", {64});
  t.add("lm_head.weight", {256, 64});
  const std::string l0 = lm + "layers.0.";
  t.add(l0 + "linear_attn.in_proj_qkv.weight", {96, 64});
  t.add(l0 + "linear_attn.in_proj_z.weight", {32, 64});
  t.add(l0 + "linear_attn.in_proj_a.weight", {4, 64});
  t.add(l0 + "linear_attn.in_proj_b.weight", {4, 64});
  t.add(l0 + "linear_attn.conv1d.weight", {96, 1, 4});
  t.add(l0 + "linear_attn.out_proj.weight", {64, 32});
  t.add(l0 + "input_layernorm.weight", {64});
  t.add(l0 + "mlp.gate.weight", {4, 64});
  t.add(l0 + "mlp.experts.gate_up_proj", {4, 64, 64});  // [E, 2I, H], I = 32
  t.add(l0 + "mlp.experts.down_proj", {4, 64, 32});     // [E, H, I]
  t.add(l0 + "mlp.shared_expert.gate_proj.weight", {32, 64});
  t.add(l0 + "mlp.shared_expert.up_proj.weight", {32, 64});
  t.add(l0 + "mlp.shared_expert.down_proj.weight", {64, 32});
  t.add(l0 + "mlp.shared_expert_gate.weight", {1, 64});
  add_attention(t, lm + "layers.1.", false, true);
  add_experts(t, lm + "layers.1.", 4);
  t.add("model.visual.patch_embed.proj.weight", {64, 3, 2, 16, 16});
  t.add("model.visual.blocks.0.attn.qkv.weight", {192, 64});
  t.add("model.visual.blocks.0.attn.proj.weight", {64, 64});
  t.add("model.visual.blocks.0.norm1.weight", {64});
  t.add("mtp.fc.weight", {64, 128});
  return t;
}

const char* kQwen35Config = R"({"architectures":["Qwen3_5MoeForConditionalGeneration"],
    "model_type":"qwen3_5_moe","tie_word_embeddings":false,
    "text_config":{"model_type":"qwen3_5_moe_text","hidden_size":64,"num_hidden_layers":2,
                   "num_experts":4,"moe_intermediate_size":32,
                   "layer_types":["linear_attention","full_attention"]},
    "vision_config":{"hidden_size":64}})";

TEST(MoePlan, Qwen35FusedExpertsAreSplitPerExpert) {
  Plan p = build_plan_from_tensors(qwen3_5_tensors().sorted(), config_of(kQwen35Config), {});
  EXPECT_EQ(p.family, "qwen3_5_moe");
  const std::string blk = "model.language_model.layers.0.mlp";
  const std::string gu = blk + ".experts.gate_up_proj";
  const std::string dn = blk + ".experts.down_proj";
  // The fused tensors themselves are not written.
  EXPECT_EQ(find_entry(p, gu), nullptr);
  EXPECT_EQ(find_entry(p, dn), nullptr);
  for (int e = 0; e < 4; ++e) {
    const std::string x = blk + ".experts." + std::to_string(e) + ".";
    const PlanEntry& g = ENTRY(p, x + "gate_proj");
    const PlanEntry& u = ENTRY(p, x + "up_proj");
    const PlanEntry& d = ENTRY(p, x + "down_proj");
    // Spec 4: gate = gate_up_proj[e, 0:I, :], up = [e, I:2I, :], down = down_proj[e].
    EXPECT_EQ(g.source.tensor, gu);
    EXPECT_EQ(g.source.expert, e);
    EXPECT_EQ(g.source.row_begin, 0u);
    EXPECT_EQ(g.source.row_end, 32u);
    EXPECT_EQ(u.source.tensor, gu);
    EXPECT_EQ(u.source.expert, e);
    EXPECT_EQ(u.source.row_begin, 32u);
    EXPECT_EQ(u.source.row_end, 64u);
    EXPECT_EQ(d.source.tensor, dn);
    EXPECT_EQ(d.source.expert, e);
    EXPECT_EQ(d.source.row_begin, 0u);
    EXPECT_EQ(d.source.row_end, 64u);
    EXPECT_EQ(g.rows, 32u);
    EXPECT_EQ(g.cols, 64u);
    EXPECT_EQ(d.rows, 64u);
    EXPECT_EQ(d.cols, 32u);
    EXPECT_EQ(g.source_bytes, 32u * 64 * 2);
  }
  expect_moe_layer_groups(p, 0, 4, "gate_proj", "up_proj", "down_proj", blk,
                          {blk + ".shared_expert.gate_proj", blk + ".shared_expert.up_proj"});
  expect_moe_layer_groups(p, 1, 4, "gate_proj", "up_proj", "down_proj",
                          "model.language_model.layers.1.mlp");
  // Wrapper prefix: embeddings and norms recognised under model.language_model.
  EXPECT_EQ(ENTRY(p, "model.language_model.embed_tokens.weight").role, Role::Embedding);
  EXPECT_EQ(ENTRY(p, "model.language_model.layers.1.self_attn.q_proj").action, Action::Quantize);
  // Vision tower kept and excluded with one wildcard; mtp kept.
  EXPECT_EQ(ENTRY(p, "model.visual.blocks.0.attn.qkv.weight").action, Action::Keep);
  EXPECT_EQ(ENTRY(p, "model.visual.blocks.0.attn.qkv.weight").role, Role::Vision);
  EXPECT_TRUE(contains(p.exclude_modules, "model.visual*"));
  EXPECT_FALSE(any_contains(p.exclude_modules, "model.visual.blocks"));
  EXPECT_TRUE(contains(p.exclude_modules, "mtp.fc"));
  EXPECT_TRUE(contains(p.exclude_modules, "model.language_model.layers.0.linear_attn.in_proj_qkv"));
  EXPECT_TRUE(contains(p.exclude_modules, "model.language_model.layers.0.mlp.gate"));
  EXPECT_TRUE(contains(p.exclude_modules, "model.language_model.layers.0.mlp.shared_expert_gate"));
  EXPECT_TRUE(contains(p.exclude_modules, "lm_head"));
  EXPECT_NO_THROW(validate_exclude_list(p));
}

TEST(MoePlan, Qwen35LinearAttentionInProjQkvAndZShareScales) {
  PlanOptions o;
  o.quantize_linear_attn = true;
  Plan p = build_plan_from_tensors(qwen3_5_tensors().sorted(), config_of(kQwen35Config), o);
  const std::string la = "model.language_model.layers.0.linear_attn.";
  const PlanEntry& qkv = ENTRY(p, la + "in_proj_qkv");
  EXPECT_EQ(member_names(p, qkv.weight_group),
            (std::vector<std::string>{la + "in_proj_qkv", la + "in_proj_z"}));
  EXPECT_EQ(qkv.input_group, qkv.weight_group);
  EXPECT_EQ(ENTRY(p, la + "out_proj").action, Action::Quantize);
  EXPECT_EQ(ENTRY(p, la + "in_proj_a.weight").action, Action::Keep);
}

TEST(MoePlan, FusedExpertsExcludedWholeStayFused) {
  PlanOptions o;
  o.rules.push_back(exclude("model.language_model.layers.0.mlp.experts.*"));
  Plan p = build_plan_from_tensors(qwen3_5_tensors().sorted(), config_of(kQwen35Config), o);
  const std::string gu = "model.language_model.layers.0.mlp.experts.gate_up_proj";
  const PlanEntry& e = ENTRY(p, gu);
  EXPECT_EQ(e.action, Action::Keep);
  EXPECT_EQ(e.shape, (std::vector<uint64_t>{4, 64, 64}));
  EXPECT_NE(e.reason.find("--exclude"), std::string::npos);
  EXPECT_EQ(find_entry(p, "model.language_model.layers.0.mlp.experts.0.gate_proj"), nullptr);
  EXPECT_TRUE(contains(p.exclude_modules, gu));
  EXPECT_NO_THROW(validate_exclude_list(p));
  // The fused tensor's own name selects all of its experts too.
  PlanOptions o2;
  o2.rules.push_back(exclude("*layers.0.mlp.experts.down_proj"));
  Plan p2 = build_plan_from_tensors(qwen3_5_tensors().sorted(), config_of(kQwen35Config), o2);
  EXPECT_EQ(ENTRY(p2, "model.language_model.layers.0.mlp.experts.down_proj").action, Action::Keep);
  EXPECT_EQ(ENTRY(p2, "model.language_model.layers.0.mlp.experts.1.up_proj").action,
            Action::Quantize);
}

TEST(MoePlan, FusedExpertsPartlyExcludedIsAnError) {
  PlanOptions o;
  o.rules.push_back(exclude("*.experts.1.*"));
  std::string err = plan_error(qwen3_5_tensors().sorted(), config_of(kQwen35Config), o);
  EXPECT_NE(err.find("model.language_model.layers.0.mlp.experts.gate_up_proj"), std::string::npos)
      << err;
  EXPECT_NE(err.find("kept whole"), std::string::npos) << err;
}

TEST(MoePlan, FusedExpertsWithKNotMultipleOf16AreKeptWhole) {
  Tensors t;
  t.add("model.layers.0.mlp.gate.weight", {2, 64});
  t.add("model.layers.0.mlp.experts.gate_up_proj", {2, 40, 64});  // I = 20
  t.add("model.layers.0.mlp.experts.down_proj", {2, 64, 20});
  Plan p = build_plan_from_tensors(
      t.sorted(), config_of(R"({"model_type":"qwen3_5_moe_text","hidden_size":64})"), {});
  EXPECT_EQ(ENTRY(p, "model.layers.0.mlp.experts.down_proj").action, Action::Keep);
  EXPECT_NE(ENTRY(p, "model.layers.0.mlp.experts.down_proj").reason.find("K=20"),
            std::string::npos);
  EXPECT_EQ(ENTRY(p, "model.layers.0.mlp.experts.1.gate_proj").action, Action::Quantize);
  EXPECT_EQ(ENTRY(p, "model.layers.0.mlp.experts.1.up_proj").source.row_begin, 20u);
  // Reported once, by the fused tensor's name.
  ASSERT_EQ(p.warnings.size(), 1u);
  EXPECT_NE(p.warnings[0].find("model.layers.0.mlp.experts.down_proj"), std::string::npos);
  EXPECT_TRUE(contains(p.exclude_modules, "model.layers.0.mlp.experts.down_proj"));
}

// What a layer must hold (issue 14): complete models pass (MLA with q-LoRA, linear attention,
// MTP layers beyond num_hidden_layers); each hole is named by the tensor that is missing.
Tensors without(const Tensors& t, const std::string& name) {
  Tensors r;
  for (const auto& m : t.list)
    if (m.name != name) r.list.push_back(m);
  return r;
}

std::string layer_error(const Tensors& t, const char* config) {
  try {
    check_layer_contents(t.sorted(), config_of(config));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(LayerContents, CompleteModelsPassAndEachHoleIsNamed) {
  EXPECT_EQ(layer_error(deepseek_tensors(), kDeepSeekConfig), "");
  EXPECT_EQ(layer_error(qwen3_next_tensors(), kQwen3NextConfig), "");
  EXPECT_NE(layer_error(without(deepseek_tensors(), "model.layers.1.self_attn.kv_b_proj.weight"),
                        kDeepSeekConfig)
                .find("model.layers.1.self_attn.kv_b_proj.weight is missing"),
            std::string::npos);
  EXPECT_NE(layer_error(without(qwen3_next_tensors(), "model.layers.0.mlp.gate.weight"),
                        kQwen3NextConfig)
                .find("model.layers.0.mlp.gate.weight is missing"),
            std::string::npos);
  EXPECT_NE(layer_error(without(qwen3_next_tensors(), "model.layers.1.self_attn.v_proj.weight"),
                        kQwen3NextConfig)
                .find("model.layers.1.self_attn.v_proj.weight is missing"),
            std::string::npos);
  // A layer with only its norms: no mixer, no MLP.
  Tensors t = deepseek_tensors();
  Tensors holes;
  for (const auto& m : t.list)
    if (m.name.rfind("model.layers.1.", 0) != 0 || m.name.find("norm") != std::string::npos)
      holes.list.push_back(m);
  holes.add("model.layers.1.input_layernorm.weight", {64});
  const std::string e = layer_error(holes, kDeepSeekConfig);
  EXPECT_NE(e.find("layer 1: no attention"), std::string::npos) << e;
  EXPECT_NE(e.find("layer 1: no MLP"), std::string::npos) << e;
}

}  // namespace
}  // namespace fp4kit
