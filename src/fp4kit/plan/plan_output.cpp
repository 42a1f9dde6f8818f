// Plan output: action names, JSON (--plan-json), byte estimates, exclude-list validation and the
// --dry-run table.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <map>
#include <unordered_set>

#include "fp4kit/error.hpp"
#include "fp4kit/plan/glob.hpp"
#include "fp4kit/plan/plan.hpp"

namespace fp4kit {

std::string_view action_name(Action a) {
  switch (a) {
    case Action::Quantize: return "quantize";
    case Action::Keep: return "keep";
    case Action::Drop: return "drop";
    case Action::Dequantize: return "dequantize";
  }
  return "?";
}

uint64_t planned_output_bytes(const PlanEntry& e, bool weights_only) {
  switch (e.action) {
    case Action::Quantize: {
      const uint64_t n = e.rows * e.cols * std::max<uint64_t>(e.bmm_experts, 1);
      return n / 2 + n / 16 + 4 + (weights_only ? 0 : 4);
    }
    case Action::Keep: return e.source_bytes;
    case Action::Drop: return 0;
    case Action::Dequantize: {
      if (e.bmm_experts > 0) return e.bmm_experts * e.rows * e.cols * 2;  // MXFP4 -> BF16
      uint64_t n = 1;
      for (uint64_t d : e.shape) n *= d;
      return n * 2;
    }
  }
  return 0;
}

nlohmann::json Plan::to_json() const {
  using nlohmann::json;
  json j;
  j["family"] = family;
  json es = json::array();
  for (const PlanEntry& e : entries) {
    json x = {{"name", e.name},
              {"action", action_name(e.action)},
              {"reason", e.reason},
              {"role", role_name(e.role)},
              {"layer", e.layer},
              {"expert", e.expert},
              {"source",
               {{"tensor", e.source.tensor},
                {"expert", e.source.expert},
                {"row_begin", e.source.row_begin},
                {"row_end", e.source.row_end}}},
              {"source_dtype", dtype_name(e.source_dtype)},
              {"shape", e.shape},
              {"source_bytes", e.source_bytes}};
    if (e.bmm_experts > 0) x["bmm_experts"] = e.bmm_experts;
    if (e.action == Action::Quantize) {
      x["rows"] = e.rows;
      x["cols"] = e.cols;
      x["weight_group"] = e.weight_group;
      x["input_group"] = e.input_group;
    }
    if (!e.source_scales.empty()) x["source_scales"] = e.source_scales;
    if (e.encoding == SourceEncoding::Fp8Block)
      x["source_encoding"] = {{"kind", "fp8_block"}, {"block", e.fp8_block}};
    if (e.encoding == SourceEncoding::Mxfp4)
      x["source_encoding"] = {{"kind", "mxfp4"}, {"block", kMxfp4BlockSize}};
    es.push_back(std::move(x));
  }
  j["entries"] = std::move(es);
  json gs = json::array();
  for (const FusionGroup& g : groups)
    gs.push_back({{"name", g.name}, {"why", g.why}, {"kind", g.kind}, {"members", g.members}});
  j["groups"] = std::move(gs);
  j["exclude_modules"] = exclude_modules;
  j["warnings"] = warnings;
  std::map<std::string, size_t> by_action;
  for (const PlanEntry& e : entries) by_action[std::string(action_name(e.action))]++;
  j["summary"] = by_action;
  return j;
}

void validate_exclude_list(const Plan& plan) {
  std::string problems;
  size_t count = 0;
  auto report = [&](const std::string& pattern, const std::string& name) {
    ++count;
    problems += fmt::format("\n  - exclude_modules entry '{}' matches quantized module {}",
                            pattern, name);
  };
  // Exact names (nearly all of them) by lookup; only wildcards scan the quantized modules, so a
  // DeepSeek-size plan (thousands of excluded MTP modules) stays fast.
  std::unordered_set<std::string_view> quantized;
  for (const PlanEntry& e : plan.entries)
    if (e.action == Action::Quantize) quantized.insert(e.name);
  for (const std::string& pattern : plan.exclude_modules) {
    if (pattern.find_first_of("*?[") == std::string::npos) {
      if (quantized.count(pattern)) report(pattern, pattern);
      continue;
    }
    for (const PlanEntry& e : plan.entries)
      if (e.action == Action::Quantize && glob_match(pattern, e.name)) report(pattern, e.name);
  }
  if (count)
    throw Error(fmt::format("plan: {} exclude-list conflict(s): a loader would skip quantized "
                            "weights:{}",
                            count, problems));
}

namespace {

std::string shape_text(const std::vector<uint64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

std::string human_bytes(uint64_t b) {
  if (b < 10 * 1024) return fmt::format("{} B", b);
  if (b < 10ull * 1024 * 1024) return fmt::format("{:.1f} KiB", b / 1024.0);
  if (b < 10ull * 1024 * 1024 * 1024) return fmt::format("{:.1f} MiB", b / 1048576.0);
  return fmt::format("{:.2f} GiB", b / 1073741824.0);
}

}  // namespace

std::string format_plan_table(const Plan& plan, bool weights_only) {
  struct Row {
    std::string action, name, reason, shape, dtype, group, before, after;
  };
  std::vector<Row> rows;
  rows.push_back({"action", "name", "reason", "shape", "dtype", "group", "before", "after"});
  uint64_t total_before = 0, total_after = 0;
  std::map<std::string, size_t> by_reason;
  for (const PlanEntry& e : plan.entries) {
    std::string shape = e.action == Action::Quantize
                            ? fmt::format("[{},{}]", e.rows, e.cols)
                            : shape_text(e.shape);
    if (e.bmm_experts > 0)  // E matrices [N, K], blocks along K: the source is [E, K, N]
      shape = fmt::format("{} x [{},{}] (BMM {})", e.bmm_experts, e.rows, e.cols,
                          shape_text(e.shape));
    if (e.source.expert >= 0)
      shape += fmt::format(" of {}[{}][{}:{}]", e.source.tensor, e.source.expert,
                           e.source.row_begin, e.source.row_end);
    std::string group = "-";
    if (e.weight_group >= 0) group = plan.groups[e.weight_group].name;
    if (e.input_group >= 0 && e.input_group != e.weight_group &&
        plan.groups[e.input_group].members.size() > 1)
      group = (group == "-" ? "" : group + " ") + "in:" + plan.groups[e.input_group].name;
    const uint64_t after = planned_output_bytes(e, weights_only);
    total_before += e.source_bytes;
    total_after += after;
    by_reason[fmt::format("{:<8} {}", action_name(e.action), e.reason)]++;
    rows.push_back({std::string(action_name(e.action)), e.name, e.reason, shape,
                    std::string(dtype_name(e.source_dtype)), group, human_bytes(e.source_bytes),
                    human_bytes(after)});
  }
  std::array<size_t, 8> w{};
  for (const Row& r : rows) {
    const std::string* f[8] = {&r.action, &r.name, &r.reason, &r.shape,
                               &r.dtype,  &r.group, &r.before, &r.after};
    for (size_t i = 0; i < 8; ++i) w[i] = std::max(w[i], f[i]->size());
  }
  std::string out = fmt::format("plan: family {}, {} entries\n", plan.family, plan.entries.size());
  for (const Row& r : rows)
    out += fmt::format("{:<{}}  {:<{}}  {:<{}}  {:<{}}  {:<{}}  {:<{}}  {:>{}}  {:>{}}\n",
                       r.action, w[0], r.name, w[1], r.reason, w[2], r.shape, w[3], r.dtype, w[4],
                       r.group, w[5], r.before, w[6], r.after, w[7]);
  out += "\nby action and reason:\n";
  for (const auto& [k, n] : by_reason) out += fmt::format("  {:>6}  {}\n", n, k);
  out += fmt::format("bytes: {} -> {} ({})\n", human_bytes(total_before), human_bytes(total_after),
                     weights_only ? "weights only" : "with input_scale");
  out += fmt::format("exclude_modules: {} entries\n", plan.exclude_modules.size());
  for (const std::string& wmsg : plan.warnings) out += "warning: " + wmsg + "\n";
  return out;
}

}  // namespace fp4kit
