// Bad input and user rules: every problem is an error that names the tensor and the rule.
#include <gtest/gtest.h>

#include "fp4kit/error.hpp"
#include "plan/plan_test_util.hpp"

namespace fp4kit {
namespace {

using namespace fp4kit::testing;

const char* kQwen3Moe = R"({"model_type":"qwen3_moe","num_experts":4,"hidden_size":64})";

Tensors moe_layer(int experts = 4) {
  Tensors t;
  add_attention(t, "model.layers.0.");
  add_experts(t, "model.layers.0.", experts);
  return t;
}

std::vector<TensorMeta> without(const Tensors& t, const std::string& name) {
  std::vector<TensorMeta> out;
  for (const auto& x : t.sorted())
    if (x.name != name) out.push_back(x);
  return out;
}

TEST(PlanErrors, MissingExpertTensorIsNamed) {
  std::string err = plan_error(without(moe_layer(), "model.layers.0.mlp.experts.2.up_proj.weight"),
                               config_of(kQwen3Moe));
  EXPECT_NE(err.find("model.layers.0.mlp.experts.2.up_proj.weight"), std::string::npos) << err;
  EXPECT_NE(err.find("expert 2"), std::string::npos) << err;
}

TEST(PlanErrors, MissingWholeExpertIsNamed) {
  Tensors t = moe_layer();
  std::vector<TensorMeta> v;
  for (const auto& x : t.sorted())
    if (x.name.find(".experts.3.") == std::string::npos) v.push_back(x);
  std::string err = plan_error(v, config_of(kQwen3Moe));
  EXPECT_NE(err.find("model.layers.0.mlp.experts.3.gate_proj.weight"), std::string::npos) << err;
  EXPECT_NE(err.find("model.layers.0.mlp.experts.3.down_proj.weight"), std::string::npos) << err;
}

TEST(PlanErrors, ExpertWithADifferentShapeIsAnErrorNotAGuess) {
  Tensors t;
  add_experts(t, "model.layers.0.", 3);
  t.add("model.layers.0.mlp.experts.3.gate_proj.weight", {16, 64});
  t.add("model.layers.0.mlp.experts.3.up_proj.weight", {16, 64});
  t.add("model.layers.0.mlp.experts.3.down_proj.weight", {64, 16});
  t.list[0].shape = {4, 64};  // router for 4 experts
  std::string err = plan_error(t.sorted(), config_of(kQwen3Moe));
  EXPECT_NE(err.find("expert 3"), std::string::npos) << err;
  EXPECT_NE(err.find("[16,64]"), std::string::npos) << err;
}

TEST(PlanErrors, GateAndUpOfOneExpertMustMatch) {
  Tensors t = moe_layer();
  for (auto& x : t.list)
    if (x.name == "model.layers.0.mlp.experts.1.up_proj.weight") x.shape = {48, 64};
  std::string err = plan_error(t.sorted(), config_of(kQwen3Moe));
  EXPECT_NE(err.find("model.layers.0.mlp.experts.1.up_proj.weight"), std::string::npos) << err;
}

TEST(PlanErrors, ExpertBeyondNumExperts) {
  std::string err = plan_error(moe_layer(5).sorted(), config_of(kQwen3Moe));
  EXPECT_NE(err.find("expert 4 beyond num_experts 4"), std::string::npos) << err;
}

TEST(PlanErrors, ThreeDExpertsOfAnUnknownLayoutAreRefusedClearly) {
  // Llama-4-style names in a family that is not llama4: nothing says which dimension is K.
  Tensors t;
  t.add("model.layers.0.feed_forward.experts.gate_up_proj", {4, 64, 96});
  t.add("model.layers.0.feed_forward.experts.down_proj", {4, 48, 64});
  const std::string err =
      plan_error(t.sorted(), config_of(R"({"model_type":"mystery_moe","hidden_size":64})"));
  EXPECT_NE(err.find("model.layers.0.feed_forward.experts.gate_up_proj [4,64,96]: 3-D expert "
                     "tensor in a layout fp4kit does not know"),
            std::string::npos) << err;
  EXPECT_NE(err.find("gpt_oss / llama4"), std::string::npos) << err;
}

TEST(PlanErrors, FusedExpertsWithoutTheirPartnerOrWrongCount) {
  Tensors t;
  t.add("model.layers.0.mlp.experts.gate_up_proj", {4, 64, 64});
  std::string err = plan_error(t.sorted(), config_of(R"({"model_type":"qwen3_5_moe"})"));
  EXPECT_NE(err.find("down_proj"), std::string::npos) << err;
  t.add("model.layers.0.mlp.experts.down_proj", {4, 64, 32});
  err = plan_error(t.sorted(), config_of(R"({"model_type":"qwen3_5_moe","num_experts":8})"));
  EXPECT_NE(err.find("num_experts is 8"), std::string::npos) << err;
}

TEST(PlanErrors, RuleMatchingNothingNamesTheRule) {
  PlanOptions o;
  o.rules.push_back({Rule::Kind::Exclude, "*.mlp.experts.*.gate_up_proj_weight_quantizer",
                     "recipe.txt:3"});
  std::string err = plan_error(moe_layer().sorted(), config_of(kQwen3Moe), o);
  EXPECT_NE(err.find("recipe.txt:3"), std::string::npos) << err;
  EXPECT_NE(err.find("*.mlp.experts.*.gate_up_proj_weight_quantizer"), std::string::npos) << err;
  EXPECT_NE(err.find("matches no module"), std::string::npos) << err;
}

TEST(PlanErrors, IncludeOfKNotMultipleOf16ListsAllOfThem) {
  Tensors t;
  for (int l = 0; l < 3; ++l) add_dense_mlp(t, "model.layers." + std::to_string(l) + ".", 172);
  PlanOptions o;
  o.rules.push_back(include("*.mlp.*"));
  std::string err = plan_error(t.sorted(), config_of(R"({"model_type":"llama"})"), o);
  for (int l = 0; l < 3; ++l)
    EXPECT_NE(err.find("model.layers." + std::to_string(l) + ".mlp.down_proj [64,172]: K=172"),
              std::string::npos)
        << err;
  EXPECT_EQ(err.find("gate_proj ["), std::string::npos) << err;
  // Excluded explicitly afterwards: fine (later wins).
  o.rules.push_back(exclude("*.down_proj"));
  Plan p = build_plan_from_tensors(t.sorted(), config_of(R"({"model_type":"llama"})"), o);
  EXPECT_EQ(ENTRY(p, "model.layers.1.mlp.down_proj.weight").action, Action::Keep);
  EXPECT_NE(ENTRY(p, "model.layers.1.mlp.down_proj.weight").reason.find("*.down_proj"),
            std::string::npos);
}

TEST(PlanErrors, IncludeOfANonLinearTensorIsAnError) {
  PlanOptions o;
  o.rules.push_back(include("model.layers.0.*"));
  std::string err = plan_error(moe_layer().sorted(), config_of(kQwen3Moe), o);
  EXPECT_NE(err.find("model.layers.0.input_layernorm.weight"), std::string::npos) << err;
  EXPECT_NE(err.find("model.layers.0.post_attention_layernorm.weight"), std::string::npos) << err;
  EXPECT_NE(err.find("not Linear weights"), std::string::npos) << err;
}

TEST(PlanErrors, AllProblemsAreReportedTogether) {
  PlanOptions o;
  o.rules.push_back(exclude("nothing.here"));
  o.rules.push_back(include("nothing.there"));
  std::string err = plan_error(without(moe_layer(), "model.layers.0.mlp.experts.0.down_proj.weight"),
                               config_of(kQwen3Moe), o);
  EXPECT_NE(err.find("nothing.here"), std::string::npos) << err;
  EXPECT_NE(err.find("nothing.there"), std::string::npos) << err;
  EXPECT_NE(err.find("experts.0.down_proj.weight"), std::string::npos) << err;
  EXPECT_NE(err.find("3 problem(s)"), std::string::npos) << err;
}

TEST(PlanRules, LaterRuleWinsAndReasonNamesIt) {
  PlanOptions o;
  o.rules.push_back(exclude("model.layers.0.self_attn.*"));
  o.rules.push_back({Rule::Kind::Include, "*.o_proj", "r.txt:2"});
  Plan p = build_plan_from_tensors(moe_layer().sorted(), config_of(kQwen3Moe), o);
  EXPECT_EQ(ENTRY(p, "model.layers.0.self_attn.o_proj").action, Action::Quantize);
  EXPECT_NE(ENTRY(p, "model.layers.0.self_attn.o_proj").reason.find("r.txt:2"), std::string::npos);
  const PlanEntry& q = ENTRY(p, "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(q.action, Action::Keep);
  EXPECT_NE(q.reason.find("--exclude"), std::string::npos);
  EXPECT_TRUE(contains(p.exclude_modules, "model.layers.0.self_attn.q_proj"));
  EXPECT_FALSE(contains(p.exclude_modules, "model.layers.0.self_attn.o_proj"));
  EXPECT_NO_THROW(validate_exclude_list(p));
}

TEST(PlanRules, ExcludingPartOfAFusionGroupWarns) {
  PlanOptions o;
  o.rules.push_back(exclude("*.k_proj"));
  Plan p = build_plan_from_tensors(moe_layer().sorted(), config_of(kQwen3Moe), o);
  EXPECT_TRUE(any_contains(p.warnings, "model.layers.0.self_attn.k_proj")) << p.warnings.size();
  EXPECT_EQ(member_names(p, ENTRY(p, "model.layers.0.self_attn.q_proj").weight_group),
            (std::vector<std::string>{"model.layers.0.self_attn.q_proj",
                                      "model.layers.0.self_attn.v_proj"}));
}

TEST(PlanRules, IncludedRouterIsQuantizedAlone) {
  PlanOptions o;
  o.rules.push_back(include("*.mlp.gate"));
  Tensors t = moe_layer();
  for (auto& x : t.list)
    if (x.name == "model.layers.0.mlp.gate.weight") x.shape = {4, 64};
  Plan p = build_plan_from_tensors(t.sorted(), config_of(kQwen3Moe), o);
  const PlanEntry& r = ENTRY(p, "model.layers.0.mlp.gate");
  EXPECT_EQ(r.action, Action::Quantize);
  EXPECT_EQ(member_names(p, r.input_group), std::vector<std::string>{"model.layers.0.mlp.gate"});
  EXPECT_FALSE(contains(p.exclude_modules, "model.layers.0.mlp.gate"));
}

TEST(PlanOutput, ValidateExcludeListCatchesAWildcardOverAQuantizedModule) {
  Plan p = build_plan_from_tensors(moe_layer().sorted(), config_of(kQwen3Moe), {});
  EXPECT_NO_THROW(validate_exclude_list(p));
  p.exclude_modules.push_back("model.layers.*gate*");  // also hits every gate_proj
  try {
    validate_exclude_list(p);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.0.mlp.experts.0.gate_proj"),
              std::string::npos);
  }
}

TEST(PlanOutput, BytesFollowTheNvfp4Layout) {
  PlanEntry q;
  q.action = Action::Quantize;
  q.rows = 64;
  q.cols = 128;
  // 64*128/2 packed + 64*128/16 scales + 4 (s2) + 4 (input_scale).
  EXPECT_EQ(planned_output_bytes(q), 4096u + 512 + 4 + 4);
  EXPECT_EQ(planned_output_bytes(q, true), 4096u + 512 + 4);
  PlanEntry k;
  k.action = Action::Keep;
  k.source_bytes = 1234;
  EXPECT_EQ(planned_output_bytes(k), 1234u);
}

TEST(PlanOutput, TableAndJsonCarryTheDecisions) {
  Tensors t;
  add_attention(t, "model.layers.0.");
  add_dense_mlp(t, "model.layers.0.", 172);
  Plan p = build_plan_from_tensors(t.sorted(), config_of(R"({"model_type":"llama"})"), {});
  std::string table = format_plan_table(p);
  EXPECT_NE(table.find("model.layers.0.mlp.down_proj.weight"), std::string::npos);
  EXPECT_NE(table.find("K=172 not a multiple of 16"), std::string::npos);
  EXPECT_NE(table.find("model.layers.0.self_attn.qkv"), std::string::npos);
  EXPECT_NE(table.find("warning:"), std::string::npos);
  nlohmann::json j = p.to_json();
  EXPECT_EQ(j["family"], "llama");
  EXPECT_EQ(j["entries"].size(), p.entries.size());
  bool found = false;
  for (const auto& e : j["entries"])
    if (e["name"] == "model.layers.0.self_attn.k_proj") {
      found = true;
      EXPECT_EQ(e["action"], "quantize");
      EXPECT_EQ(e["rows"], 32);
      EXPECT_EQ(e["cols"], 64);
      EXPECT_EQ(j["groups"][e["weight_group"].get<size_t>()]["name"], "model.layers.0.self_attn.qkv");
    }
  EXPECT_TRUE(found);
  EXPECT_EQ(j["exclude_modules"], (std::vector<std::string>{"lm_head", "model.layers.0.mlp.down_proj"}));
  EXPECT_EQ(j["summary"]["keep"], 3);  // down_proj + 2 norms
}

}  // namespace
}  // namespace fp4kit
