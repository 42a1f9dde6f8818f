// input_scale per input group from hand-written statistics (spec sections 2-3).
#include <gtest/gtest.h>

#include "fp4kit/error.hpp"
#include "fp4kit/quant/input_scales.hpp"

namespace fp4kit {
namespace {

PlanEntry quantized(const std::string& name, Role role, int64_t input_group) {
  PlanEntry e;
  e.name = name;
  e.action = Action::Quantize;
  e.role = role;
  e.rows = 32;
  e.cols = 64;
  e.input_group = input_group;
  return e;
}

// One MoE layer: 2 routed experts (gate/up/down) and shared-expert gate/up in the gate/up group.
Plan moe_layer_plan() {
  Plan p;
  const std::string x = "model.layers.0.mlp.";
  p.entries = {quantized(x + "experts.0.gate_proj", Role::ExpertGate, 0),
               quantized(x + "experts.0.up_proj", Role::ExpertUp, 0),
               quantized(x + "experts.0.down_proj", Role::ExpertDown, 1),
               quantized(x + "experts.1.gate_proj", Role::ExpertGate, 0),
               quantized(x + "experts.1.up_proj", Role::ExpertUp, 0),
               quantized(x + "experts.1.down_proj", Role::ExpertDown, 1),
               quantized(x + "shared_expert.gate_proj", Role::SharedGate, 0),
               quantized(x + "shared_expert.up_proj", Role::SharedUp, 0)};
  p.groups = {{"layer0.gate_up", "same tokens", {0, 1, 3, 4, 6, 7}},
              {"layer0.down", "one per layer", {2, 5}}};
  return p;
}

TEST(InputScales, GroupTakesMaxOfMembersInGpuForm) {
  const Plan plan = moe_layer_plan();
  ActivationStats stats;
  const std::string x = "model.layers.0.mlp.";
  stats.input_amax[x + "experts.0.gate_proj"] = 3.0f;
  stats.input_amax[x + "experts.0.up_proj"] = 3.0f;
  stats.input_amax[x + "experts.1.gate_proj"] = 5.5f;  // the max of the gate/up group
  stats.input_amax[x + "shared_expert.gate_proj"] = 4.0f;
  stats.input_amax[x + "experts.0.down_proj"] = 0.75f;  // expert 1 saw no token: no entry
  QuantOptions o;
  const auto s = compute_input_scales(plan, stats, o, "stats.safetensors");
  ASSERT_EQ(s.size(), 2u);
  // GPU form: amax * (float)(1/2688), in float32.
  const float r = 1.0f / 2688.0f;
  EXPECT_EQ(s[0], 5.5f * r);
  EXPECT_EQ(s[1], 0.75f * r);
}

TEST(InputScales, CpuFormDivides) {
  const Plan plan = moe_layer_plan();
  ActivationStats stats;
  stats.input_amax["model.layers.0.mlp.experts.0.gate_proj"] = 7.0f;
  stats.input_amax["model.layers.0.mlp.experts.1.down_proj"] = 3.0f;
  QuantOptions o;
  o.scale_form = ScaleForm::Cpu;
  const auto s = compute_input_scales(plan, stats, o, "x");
  EXPECT_EQ(s[0], 7.0f / 2688.0f);
  EXPECT_EQ(s[1], 3.0f / 2688.0f);
}

TEST(InputScales, GroupWithoutStatsIsAnErrorNamingIt) {
  const Plan plan = moe_layer_plan();
  ActivationStats stats;
  stats.input_amax["model.layers.0.mlp.experts.0.gate_proj"] = 2.0f;
  QuantOptions o;
  try {
    compute_input_scales(plan, stats, o, "calib.safetensors");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("calib.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find("layer0.down"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--input-scale-fallback"), std::string::npos) << msg;
  }
}

TEST(InputScales, FallbackUsesSameProjectionKind) {
  Plan plan = moe_layer_plan();
  // A second layer whose down group got nothing.
  plan.entries.push_back(quantized("model.layers.1.mlp.experts.0.down_proj", Role::ExpertDown, 2));
  plan.groups.push_back({"layer1.down", "one per layer", {8}});
  ActivationStats stats;
  stats.input_amax["model.layers.0.mlp.experts.0.gate_proj"] = 9.0f;
  stats.input_amax["model.layers.0.mlp.experts.0.down_proj"] = 1.5f;
  QuantOptions o;
  o.input_scale_fallback = true;
  const auto s = compute_input_scales(plan, stats, o, "x");
  EXPECT_EQ(s[2], s[1]);  // down falls back to the down amax, not the gate/up one
  EXPECT_NE(s[2], s[0]);
}

TEST(InputScales, NegativeOrNanAmaxRejected) {
  const Plan plan = moe_layer_plan();
  ActivationStats stats;
  stats.input_amax["model.layers.0.mlp.experts.0.gate_proj"] = -1.0f;
  stats.input_amax["model.layers.0.mlp.experts.0.down_proj"] = 1.0f;
  QuantOptions o;
  EXPECT_THROW(compute_input_scales(plan, stats, o, "x"), Error);
}

}  // namespace
}  // namespace fp4kit
