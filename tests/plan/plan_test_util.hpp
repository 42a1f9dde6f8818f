#pragma once
// Helpers for plan tests: hand-written tensor lists (real HF names, tiny dims) and lookups.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "fp4kit/model/config.hpp"
#include "fp4kit/plan/plan.hpp"

namespace fp4kit::testing {

struct Tensors {
  std::vector<TensorMeta> list;
  Tensors& add(const std::string& name, std::vector<uint64_t> shape, DType dt = DType::BF16) {
    list.push_back({name, dt, std::move(shape)});
    return *this;
  }
  // Sorted by name, as Checkpoint::tensor_names() gives them.
  std::vector<TensorMeta> sorted() const {
    auto v = list;
    std::sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.name < b.name; });
    return v;
  }
};

inline ModelConfig config_of(const std::string& json) {
  return ModelConfig::parse(nlohmann::json::parse(json), "test/config.json");
}

inline const PlanEntry* find_entry(const Plan& p, const std::string& name) {
  for (const auto& e : p.entries)
    if (e.name == name) return &e;
  return nullptr;
}

// The entry, or a test failure naming it.
#define ENTRY(plan, name)                                                   \
  ([&]() -> const ::fp4kit::PlanEntry& {                                    \
    const ::fp4kit::PlanEntry* e_ = ::fp4kit::testing::find_entry(plan, name); \
    if (!e_) throw std::runtime_error(std::string("no plan entry ") + (name)); \
    return *e_;                                                             \
  }())

inline std::vector<std::string> member_names(const Plan& p, int64_t group) {
  std::vector<std::string> out;
  if (group < 0) return out;
  for (size_t m : p.groups[group].members) out.push_back(p.entries[m].name);
  std::sort(out.begin(), out.end());
  return out;
}

inline size_t count_action(const Plan& p, Action a) {
  return std::count_if(p.entries.begin(), p.entries.end(),
                       [&](const PlanEntry& e) { return e.action == a; });
}

inline bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

inline bool any_contains(const std::vector<std::string>& v, const std::string& part) {
  for (const auto& s : v)
    if (s.find(part) != std::string::npos) return true;
  return false;
}

// Runs build and returns the error message ("" when no error).
inline std::string plan_error(const std::vector<TensorMeta>& t, const ModelConfig& c,
                              const PlanOptions& o = {}) {
  try {
    build_plan_from_tensors(t, c, o);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

inline Rule include(const std::string& glob) {
  return {Rule::Kind::Include, glob, "--include"};
}
inline Rule exclude(const std::string& glob) {
  return {Rule::Kind::Exclude, glob, "--exclude"};
}

// Standard attention of layer L (hidden 64, 8 heads of 8, 4 KV heads).
inline void add_attention(Tensors& t, const std::string& layer, bool bias = false,
                          bool qk_norm = false) {
  t.add(layer + "self_attn.q_proj.weight", {64, 64});
  t.add(layer + "self_attn.k_proj.weight", {32, 64});
  t.add(layer + "self_attn.v_proj.weight", {32, 64});
  t.add(layer + "self_attn.o_proj.weight", {64, 64});
  if (bias) {
    t.add(layer + "self_attn.q_proj.bias", {64});
    t.add(layer + "self_attn.k_proj.bias", {32});
    t.add(layer + "self_attn.v_proj.bias", {32});
  }
  if (qk_norm) {
    t.add(layer + "self_attn.q_norm.weight", {8});
    t.add(layer + "self_attn.k_norm.weight", {8});
  }
  t.add(layer + "input_layernorm.weight", {64});
  t.add(layer + "post_attention_layernorm.weight", {64});
}

inline void add_dense_mlp(Tensors& t, const std::string& layer, uint64_t inter = 128) {
  t.add(layer + "mlp.gate_proj.weight", {inter, 64});
  t.add(layer + "mlp.up_proj.weight", {inter, 64});
  t.add(layer + "mlp.down_proj.weight", {64, inter});
}

// Per-expert routed experts under <layer>mlp.experts.E (Qwen/DeepSeek/OLMoE names), I = 32.
inline void add_experts(Tensors& t, const std::string& layer, int n, uint64_t inter = 32) {
  t.add(layer + "mlp.gate.weight", {static_cast<uint64_t>(n), 64});
  for (int e = 0; e < n; ++e) {
    std::string p = layer + "mlp.experts." + std::to_string(e) + ".";
    t.add(p + "gate_proj.weight", {inter, 64});
    t.add(p + "up_proj.weight", {inter, 64});
    t.add(p + "down_proj.weight", {64, inter});
  }
}

}  // namespace fp4kit::testing
