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
    if (amax > 0 && !plausible_scale(scales[g]))
      throw Error(fmt::format("{}: input group {}: input_amax {:.6g} gives input_scale {:.6g}, "
                              "outside the plausible range (amax in [{:g}, {:g}]): statistics "
                              "of a broken or unrelated run? Re-run `fp4kit calibrate`",
                              stats_label, plan.groups[g].name, amax, scales[g],
                              kMinPlausibleAmax, kMaxPlausibleAmax));
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

std::vector<std::string> check_stats_source(const Plan& plan, const ActivationStats& stats,
                                            const std::string& fingerprint,
                                            const std::string& stats_label) {
  std::vector<std::string> warnings;
  auto fp = stats.metadata.find("source_fingerprint");
  if (fp == stats.metadata.end()) {
    warnings.push_back(fmt::format("{}: records no source_fingerprint (not written by fp4kit "
                                   "calibrate): cannot check that it describes this model",
                                   stats_label));
  } else if (fp->second != fingerprint) {
    auto src = stats.metadata.find("source");
    throw Error(fmt::format(
        "{}: made from another model ({}, fingerprint {}) than the one being quantized "
        "(fingerprint {}): its input scales would be wrong. Run `fp4kit calibrate` on this "
        "model.",
        stats_label, src == stats.metadata.end() ? std::string("source not recorded") : src->second,
        fp->second, fingerprint));
  }
  std::map<std::string, const PlanEntry*> quantized;
  std::set<std::string> known;
  for (const auto& e : plan.entries) {
    known.insert(e.name);
    if (e.action == Action::Quantize) quantized[e.name] = &e;
    if (e.name.size() > 7 && e.name.compare(e.name.size() - 7, 7, ".weight") == 0)
      known.insert(e.name.substr(0, e.name.size() - 7));
  }
  for (const auto& [m, v] : stats.input_sq_sum) {
    auto it = quantized.find(m);
    if (it != quantized.end() && v.size() != it->second->cols)
      throw Error(fmt::format("{}: {}.input_sq_sum has {} entries but the module's input has {} "
                              "features (K): the statistics are of another model",
                              stats_label, m, v.size(), it->second->cols));
  }
  std::vector<std::string> unknown;
  for (const auto& [m, a] : stats.input_amax)
    if (!known.count(m)) unknown.push_back(m);
  if (!unknown.empty())
    warnings.push_back(fmt::format("{}: statistics of {} module(s) this model does not have "
                                   "(e.g. {}): ignored",
                                   stats_label, unknown.size(), unknown.front()));
  return warnings;
}

}  // namespace fp4kit
