// Plans for BMM 3-D experts (gpt-oss, Llama-4; NVFP4-SPEC.md section 4, issue 8): one Quantize
// entry per tensor, kept 3-D, one s2 for all experts, its own input group per projection kind;
// routers, biases and sinks kept; broken pairs refused naming the tensors.
#include <gtest/gtest.h>

#include "fp4kit/error.hpp"
#include "plan/plan_test_util.hpp"

namespace fp4kit {
namespace {

using testing::config_of;
using testing::plan_error;
using testing::Tensors;

// H = 64, I = 48 (so [E, H, 2I] = [4, 64, 96] and [E, 2I, H] cannot be confused), 4 experts.
const char* kGptOssConfig = R"({"architectures":["GptOssForCausalLM"],"model_type":"gpt_oss",
    "hidden_size":64,"intermediate_size":48,"num_hidden_layers":1,"num_local_experts":4})";

Tensors gpt_oss() {
  Tensors t;
  const std::string p = "model.layers.0.mlp.experts.";
  testing::add_attention(t, "model.layers.0.", /*bias=*/true);
  t.add("model.layers.0.self_attn.o_proj.bias", {64});
  t.add("model.layers.0.self_attn.sinks", {8});
  t.add("model.layers.0.mlp.router.weight", {4, 64});
  t.add("model.layers.0.mlp.router.bias", {4});
  t.add(p + "gate_up_proj", {4, 64, 96});
  t.add(p + "gate_up_proj_bias", {4, 96});
  t.add(p + "down_proj", {4, 48, 64});
  t.add(p + "down_proj_bias", {4, 64});
  t.add("model.embed_tokens.weight", {256, 64});
  t.add("lm_head.weight", {256, 64});
  t.add("model.norm.weight", {64});
  return t;
}

TEST(BmmPlan, GptOssExpertsAreOneQuantizeEntryPerTensorKept3D) {
  const Plan plan = build_plan_from_tensors(gpt_oss().sorted(), config_of(kGptOssConfig), {});
  EXPECT_EQ(plan.family, "gpt_oss");
  const std::string p = "model.layers.0.mlp.experts.";
  const PlanEntry& gu = ENTRY(plan, p + "gate_up_proj");
  EXPECT_EQ(gu.action, Action::Quantize);
  EXPECT_EQ(gu.role, Role::BmmExpertGateUp);
  EXPECT_EQ(gu.bmm_experts, 4u);
  EXPECT_EQ(gu.rows, 96u) << "N = 2I: the GEMM's output dimension";
  EXPECT_EQ(gu.cols, 64u) << "K = H: blocks of 16 run along the input dimension";
  EXPECT_EQ(gu.source.tensor, p + "gate_up_proj");
  EXPECT_EQ(gu.encoding, SourceEncoding::Plain);
  EXPECT_EQ(gu.weight_group, -1) << "one tensor, one s2: no group with anything else";
  const PlanEntry& dn = ENTRY(plan, p + "down_proj");
  EXPECT_EQ(dn.rows, 64u);
  EXPECT_EQ(dn.cols, 48u);
  EXPECT_NE(gu.input_group, dn.input_group);
  EXPECT_EQ(testing::member_names(plan, gu.input_group), std::vector<std::string>{gu.name});
  // Output bytes: E * N * K * (1/2 + 1/16) + s2 + input_scale.
  EXPECT_EQ(planned_output_bytes(gu), 4u * 96 * 64 / 2 + 4u * 96 * 64 / 16 + 8);
  for (const char* kept : {"model.layers.0.mlp.router.weight", "model.layers.0.mlp.router.bias",
                           "model.layers.0.mlp.experts.gate_up_proj_bias",
                           "model.layers.0.mlp.experts.down_proj_bias",
                           "model.layers.0.self_attn.sinks"})
    EXPECT_EQ(ENTRY(plan, kept).action, Action::Keep) << kept;
  // q/k/v keep their fusion group (gpt-oss attention is standard).
  EXPECT_EQ(testing::member_names(plan, ENTRY(plan, "model.layers.0.self_attn.q_proj").weight_group).size(), 3u);
  // ModelOpt's exclude list for gpt-oss: lm_head, embed_tokens, the routers.
  EXPECT_EQ(plan.exclude_modules,
            (std::vector<std::string>{"lm_head", "model.embed_tokens", "model.layers.0.mlp.router"}));
}

TEST(BmmPlan, ExcludingBmmExpertsKeepsTheTensorWholeAndListsIt) {
  PlanOptions o;
  o.rules.push_back(testing::exclude("*.experts.down_proj"));
  const Plan plan = build_plan_from_tensors(gpt_oss().sorted(), config_of(kGptOssConfig), o);
  const std::string p = "model.layers.0.mlp.experts.";
  EXPECT_EQ(ENTRY(plan, p + "down_proj").action, Action::Keep);
  EXPECT_EQ(ENTRY(plan, p + "gate_up_proj").action, Action::Quantize);
  EXPECT_TRUE(testing::contains(plan.exclude_modules, p + "down_proj"));
}

TEST(BmmPlan, BrokenBmmPairsAreErrors) {
  const std::string p = "model.layers.0.mlp.experts.";
  {
    Tensors t;
    t.add(p + "gate_up_proj", {4, 64, 96});
    const std::string msg = plan_error(t.sorted(), config_of(kGptOssConfig));
    EXPECT_NE(msg.find("model.layers.0.mlp: BMM experts need both gate_up_proj and down_proj, "
                       "found only " + p + "gate_up_proj"),
              std::string::npos) << msg;
  }
  {
    Tensors t;  // the per-expert-fused orientation [E, 2I, H] under gpt-oss names
    t.add(p + "gate_up_proj", {4, 96, 64});
    t.add(p + "down_proj", {4, 64, 48});
    const std::string msg = plan_error(t.sorted(), config_of(kGptOssConfig));
    EXPECT_NE(msg.find("not the BMM expert layout gate_up [E, H, 2I] + down [E, I, H]"),
              std::string::npos) << msg;
  }
  {
    Tensors t;  // more experts than the config says
    t.add(p + "gate_up_proj", {8, 64, 96});
    t.add(p + "down_proj", {8, 48, 64});
    const std::string msg = plan_error(t.sorted(), config_of(kGptOssConfig));
    EXPECT_NE(msg.find("8 experts, config num_experts is 4"), std::string::npos) << msg;
  }
  {
    Tensors t;  // K = I = 40 is not a multiple of 16, asked for explicitly
    t.add(p + "gate_up_proj", {4, 64, 80});
    t.add(p + "down_proj", {4, 40, 64});
    PlanOptions o;
    o.rules.push_back(testing::include("*.experts.down_proj"));
    const std::string msg = plan_error(t.sorted(), config_of(kGptOssConfig), o);
    EXPECT_NE(msg.find(p + "down_proj [64,40]: K=40 not a multiple of 16"), std::string::npos)
        << msg;
  }
}

TEST(BmmPlan, BmmShapedFusedExpertsInAnotherFamilyAreNotGuessed) {
  Tensors t;
  const std::string p = "model.layers.0.mlp.experts.";
  t.add(p + "gate_up_proj", {4, 64, 96});
  t.add(p + "down_proj", {4, 48, 64});
  t.add("model.layers.0.mlp.gate.weight", {4, 64});
  const auto cfg = config_of(R"({"architectures":["Qwen3MoeForCausalLM"],"model_type":"qwen3_moe",
      "hidden_size":64,"num_hidden_layers":1,"num_experts":4})");
  const std::string msg = plan_error(t.sorted(), cfg);
  EXPECT_NE(msg.find("shaped like the BMM expert layout"), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not guess the orientation"), std::string::npos) << msg;
}

TEST(BmmPlan, Llama4MoeAndDenseLayersWithSharedExpertAndVisionTower) {
  Tensors t;
  const std::string l0 = "language_model.model.layers.0.", l1 = "language_model.model.layers.1.";
  testing::add_attention(t, l0);
  testing::add_attention(t, l1);
  t.add(l0 + "feed_forward.router.weight", {4, 64});
  t.add(l0 + "feed_forward.experts.gate_up_proj", {4, 64, 96});
  t.add(l0 + "feed_forward.experts.down_proj", {4, 48, 64});
  t.add(l0 + "feed_forward.shared_expert.gate_proj.weight", {48, 64});
  t.add(l0 + "feed_forward.shared_expert.up_proj.weight", {48, 64});
  t.add(l0 + "feed_forward.shared_expert.down_proj.weight", {64, 48});
  t.add(l1 + "feed_forward.gate_proj.weight", {128, 64});
  t.add(l1 + "feed_forward.up_proj.weight", {128, 64});
  t.add(l1 + "feed_forward.down_proj.weight", {64, 128});
  t.add("language_model.model.embed_tokens.weight", {256, 64});
  t.add("language_model.lm_head.weight", {256, 64});
  t.add("vision_model.model.layers.0.self_attn.q_proj.weight", {32, 32});
  t.add("multi_modal_projector.linear_1.weight", {64, 32});
  const auto cfg = config_of(R"({"architectures":["Llama4ForConditionalGeneration"],
      "model_type":"llama4","text_config":{"model_type":"llama4_text","hidden_size":64,
      "intermediate_size":48,"intermediate_size_mlp":128,"num_hidden_layers":2,
      "num_local_experts":4}})");
  const Plan plan = build_plan_from_tensors(t.sorted(), cfg, {});
  EXPECT_EQ(plan.family, "llama4");
  const PlanEntry& gu = ENTRY(plan, l0 + "feed_forward.experts.gate_up_proj");
  EXPECT_EQ(gu.action, Action::Quantize);
  EXPECT_EQ(gu.bmm_experts, 4u);
  EXPECT_EQ(gu.rows, 96u);
  EXPECT_EQ(gu.cols, 64u);
  EXPECT_EQ(ENTRY(plan, l0 + "feed_forward.router.weight").action, Action::Keep);
  // The shared expert's gate/up: one fusion group (s2) and one input_scale of their own; the
  // routed BMM experts' input_scale is not shared with them (as ModelOpt exports Llama-4).
  const PlanEntry& sg = ENTRY(plan, l0 + "feed_forward.shared_expert.gate_proj");
  EXPECT_EQ(testing::member_names(plan, sg.weight_group),
            (std::vector<std::string>{l0 + "feed_forward.shared_expert.gate_proj",
                                      l0 + "feed_forward.shared_expert.up_proj"}));
  EXPECT_NE(sg.input_group, gu.input_group);
  EXPECT_EQ(testing::member_names(plan, gu.input_group), std::vector<std::string>{gu.name});
  // Dense layer: gate/up fused.
  const PlanEntry& dg = ENTRY(plan, l1 + "feed_forward.gate_proj");
  EXPECT_EQ(dg.action, Action::Quantize);
  EXPECT_EQ(testing::member_names(plan, dg.weight_group).size(), 2u);
  EXPECT_EQ(ENTRY(plan, "vision_model.model.layers.0.self_attn.q_proj.weight").action,
            Action::Keep);
}

}  // namespace
}  // namespace fp4kit
