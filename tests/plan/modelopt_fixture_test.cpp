// fp4kit's plan against NVIDIA ModelOpt, an independent implementation: for tiny random
// transformers models of every family in the tables, the same modules quantized, the same
// exclude list, and every fusion group fp4kit forms carries one weight_scale_2 / input_scale in
// ModelOpt's export. Fixtures: tests/plan/data/modelopt_<family>.json, made by
// tests/plan/data/make_modelopt_fixtures.py (transformers 5.23, ModelOpt 0.47, CPU).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "plan/plan_test_util.hpp"

namespace fp4kit {
namespace {

using nlohmann::json;
using namespace fp4kit::testing;

struct Fixture {
  json data;
  std::vector<TensorMeta> tensors;
  ModelConfig config;
};

Fixture load(const std::string& family) {
  const auto path =
      std::filesystem::path(FP4KIT_SOURCE_DIR) / "tests/plan/data" / ("modelopt_" + family + ".json");
  std::ifstream in(path);
  if (!in) throw std::runtime_error("missing fixture " + path.string());
  Fixture f;
  f.data = json::parse(in);
  for (const auto& t : f.data["tensors"]) {
    auto dt = parse_dtype(t[1].get<std::string>());
    if (!dt) throw std::runtime_error("bad dtype in fixture");
    f.tensors.push_back({t[0].get<std::string>(), *dt, t[2].get<std::vector<uint64_t>>()});
  }
  f.config = ModelConfig::parse(f.data["config"], path.string());
  return f;
}

std::set<std::string> quantized(const Plan& p) {
  std::set<std::string> out;
  for (const auto& e : p.entries)
    if (e.action == Action::Quantize) out.insert(e.name);
  return out;
}

// spec 7: fp4kit keeps linear attention by default; ModelOpt quantizes these three kinds.
bool linear_attn_by_option(const std::string& m) {
  for (const char* s : {".linear_attn.in_proj_qkv", ".linear_attn.in_proj_z",
                        ".linear_attn.in_proj_qkvz", ".linear_attn.out_proj"}) {
    const std::string suffix = s;
    if (m.size() > suffix.size() && m.compare(m.size() - suffix.size(), suffix.size(), suffix) == 0)
      return true;
  }
  return false;
}

class ModelOptFixture : public ::testing::TestWithParam<const char*> {};

TEST_P(ModelOptFixture, SameQuantizedAndExcludedModulesAndSharedScales) {
  const Fixture f = load(GetParam());
  const json& mo = f.data["modelopt"];
  const auto mo_quantized = mo["quantized"].get<std::set<std::string>>();
  const auto mo_exclude = mo["exclude_modules"].get<std::vector<std::string>>();

  PlanOptions with_la;
  with_la.quantize_linear_attn = true;
  const Plan p = build_plan_from_tensors(f.tensors, f.config, with_la);
  EXPECT_EQ(p.family, GetParam());
  EXPECT_EQ(quantized(p), mo_quantized);
  EXPECT_EQ(p.exclude_modules, mo_exclude);
  EXPECT_TRUE(p.warnings.empty());

  // Every fusion group fp4kit forms has one value in ModelOpt's output.
  size_t shared_groups = 0;
  for (const FusionGroup& g : p.groups) {
    if (g.members.size() < 2) continue;
    ++shared_groups;
    std::set<double> s2, in;
    for (size_t m : g.members) {
      const std::string& name = p.entries[m].name;
      if (g.kind != "input") s2.insert(mo["weight_scale_2"][name].get<double>());
      if (g.kind != "weight") in.insert(mo["input_scale"][name].get<double>());
    }
    EXPECT_LE(s2.size(), 1u) << g.name << ": ModelOpt has different weight_scale_2 values";
    EXPECT_LE(in.size(), 1u) << g.name << ": ModelOpt has different input_scale values";
  }
  EXPECT_GT(shared_groups, 0u);

  // Defaults: the only difference is linear attention, kept and listed (spec 7).
  const Plan d = build_plan_from_tensors(f.tensors, f.config, {});
  std::set<std::string> expected_q, expected_extra_excl;
  for (const auto& m : mo_quantized)
    (linear_attn_by_option(m) ? expected_extra_excl : expected_q).insert(m);
  EXPECT_EQ(quantized(d), expected_q);
  std::set<std::string> expected_excl(mo_exclude.begin(), mo_exclude.end());
  expected_excl.insert(expected_extra_excl.begin(), expected_extra_excl.end());
  EXPECT_EQ(std::set<std::string>(d.exclude_modules.begin(), d.exclude_modules.end()),
            expected_excl);
}

INSTANTIATE_TEST_SUITE_P(Families, ModelOptFixture,
                         ::testing::Values("llama", "mistral", "qwen2", "qwen3", "qwen2_moe",
                                           "qwen3_moe", "mixtral", "olmoe", "glm4_moe",
                                           "deepseek_v3", "qwen3_next", "qwen3_5_moe"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace fp4kit
