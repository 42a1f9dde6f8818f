#include "fp4kit/quant/input_scales.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "fp4kit/error.hpp"

namespace fp4kit {

namespace {
// "gate_up" / "down" / "qkv" style key of a group for the fallback: the projection kind.
std::string projection_kind(const PlanEntry& e) {
  switch (e.role) {
    case Role::ExpertGate: case Role::ExpertUp: case Role::SharedGate: case Role::SharedUp:
    case Role::MlpGate: case Role::MlpUp: case Role::FusedExpertGateUp:
    case Role::BmmExpertGateUp:
      return "gate_up";
    case Role::ExpertDown: case Role::SharedDown: case Role::MlpDown: case Role::FusedExpertDown:
    case Role::BmmExpertDown:
      return "down";
    default:
      return std::string(role_name(e.role));
  }
}
}  // namespace

std::vector<float> compute_input_scales(const Plan& plan, const ActivationStats& stats,
                                        const QuantOptions& options,
                                        const std::string& stats_label) {
  std::vector<float> scales(plan.groups.size(), 0.0f);
  std::set<int64_t> input_groups;
  for (const auto& e : plan.entries)
    if (e.action == Action::Quantize) {
      if (e.input_group < 0)
        throw Error(fmt::format("plan: quantized module '{}' has no input group (internal error)",
                                e.name));
      input_groups.insert(e.input_group);
    }

  std::map<std::string, float> kind_max;  // for the fallback
  std::vector<int64_t> empty;
  for (int64_t g : input_groups) {
    float amax = -1.0f;
    for (size_t m : plan.groups[g].members) {
      auto it = stats.input_amax.find(plan.entries[m].name);
      if (it == stats.input_amax.end()) continue;
      if (!std::isfinite(it->second) || it->second < 0)
        throw Error(fmt::format("{}: input_amax of '{}' is {} (must be finite, >= 0)",
                                stats_label, plan.entries[m].name, it->second));
      amax = std::max(amax, it->second);
    }
    if (amax < 0) {
      empty.push_back(g);
      continue;
    }
    scales[g] = nvfp4_global_scale(amax, options.scale_form);
    const PlanEntry& first = plan.entries[plan.groups[g].members.front()];
    float& km = kind_max[projection_kind(first)];
    km = std::max(km, amax);
  }
  if (empty.empty()) return scales;

  if (!options.input_scale_fallback) {
    std::string list;
    for (int64_t g : empty) {
      list += fmt::format("\n  group {} ({} modules, e.g. {})", plan.groups[g].name,
                          plan.groups[g].members.size(),
                          plan.entries[plan.groups[g].members.front()].name);
    }
    throw Error(fmt::format(
        "{}: no calibration statistics for {} input group(s); every quantized linear needs an "
        "input_scale for W4A4 (a missing one gives NaN output in vLLM).{}\nRe-run "
        "`fp4kit calibrate` with more samples or --all-experts, pass --input-scale-fallback to "
        "reuse the largest amax of the same projection kind, or use --weights-only.",
        stats_label, empty.size(), list));
  }
  for (int64_t g : empty) {
    const PlanEntry& first = plan.entries[plan.groups[g].members.front()];
    auto it = kind_max.find(projection_kind(first));
    if (it == kind_max.end())
      throw Error(fmt::format("{}: no statistics for input group {} and no other '{}' module to "
                              "fall back on",
                              stats_label, plan.groups[g].name, projection_kind(first)));
    scales[g] = nvfp4_global_scale(it->second, options.scale_form);
  }
  return scales;
}

}  // namespace fp4kit
