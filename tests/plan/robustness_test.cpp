// Random tensor lists built from real name fragments and odd shapes: the planner either returns
// a plan whose invariants hold or throws fp4kit::Error. Nothing else (no crash, no other exception).
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "fp4kit/error.hpp"
#include "plan/plan_test_util.hpp"

namespace fp4kit {
namespace {

using namespace fp4kit::testing;

const char* kPrefixes[] = {"model.layers.", "model.language_model.layers.", "layers.", "mtp.layers.",
                           "model.visual.blocks.", "transformer.h."};
const char* kParts[] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                        "self_attn.o_proj.weight", "self_attn.q_proj.bias", "mlp.gate.weight",
                        "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
                        "mlp.experts.0.gate_proj.weight", "mlp.experts.1.up_proj.weight",
                        "mlp.experts.0.down_proj.weight", "mlp.experts.gate_up_proj",
                        "mlp.experts.down_proj", "mlp.shared_expert.gate_proj.weight",
                        "mlp.shared_expert_gate.weight", "block_sparse_moe.experts.0.w1.weight",
                        "linear_attn.in_proj_qkv.weight", "linear_attn.conv1d.weight",
                        "input_layernorm.weight", "self_attn.kv_a_proj_with_mqa.weight",
                        "mlp.gate.e_score_correction_bias", "weight", "", "experts.x.weight"};
const char* kTypes[] = {"llama", "qwen3_moe", "qwen3_5_moe", "deepseek_v3", "mixtral", "zzz", ""};

TEST(PlanRobustness, RandomListsGivePlansOrErrors) {
  std::mt19937 rng(12345);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  size_t plans = 0, errors = 0;
  for (int iter = 0; iter < 400; ++iter) {
    std::set<std::string> seen;
    std::vector<TensorMeta> t;
    const int count = 1 + static_cast<int>(pick(30));
    for (int i = 0; i < count; ++i) {
      std::string name = std::string(kPrefixes[pick(6)]) + std::to_string(pick(4)) + "." +
                         kParts[pick(std::size(kParts))];
      if (!seen.insert(name).second) continue;
      std::vector<uint64_t> shape;
      const size_t rank = pick(5);
      for (size_t d = 0; d < rank; ++d) shape.push_back(pick(4) == 0 ? 0 : 16 * (1 + pick(4)) + pick(2) * 4);
      t.push_back({name, pick(6) == 0 ? DType::F8_E4M3 : DType::BF16, shape});
    }
    std::sort(t.begin(), t.end(), [](auto& a, auto& b) { return a.name < b.name; });
    const std::string cfg = std::string(R"({"model_type":")") + kTypes[pick(std::size(kTypes))] +
                            R"(","hidden_size":)" + std::to_string(16 * (1 + pick(4))) +
                            R"(,"num_hidden_layers":)" + std::to_string(pick(5)) + "}";
    PlanOptions o;
    if (pick(3) == 0) o.rules.push_back(exclude("*experts*"));
    if (pick(3) == 0) o.rules.push_back(include("*proj"));
    try {
      Plan p = build_plan_from_tensors(t, config_of(cfg), o);
      ++plans;
      for (const PlanEntry& e : p.entries) {
        if (e.action != Action::Quantize) continue;
        ASSERT_GT(e.rows, 0u) << e.name;
        ASSERT_EQ(e.cols % 16, 0u) << e.name;
        ASSERT_GE(e.input_group, 0) << e.name;
        ASSERT_LT(static_cast<size_t>(e.input_group), p.groups.size());
      }
      for (const FusionGroup& g : p.groups)
        for (size_t m : g.members) ASSERT_EQ(p.entries[m].action, Action::Quantize) << g.name;
      EXPECT_NO_THROW(validate_exclude_list(p));
    } catch (const Error&) {
      ++errors;
    }
  }
  // Both outcomes happen (else the generator tests nothing interesting).
  EXPECT_GT(plans, 20u);
  EXPECT_GT(errors, 20u);
}

}  // namespace
}  // namespace fp4kit
