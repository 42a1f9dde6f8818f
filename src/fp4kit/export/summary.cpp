#include "fp4kit/export/summary.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>

namespace fp4kit {

namespace {
std::string human_bytes(uint64_t b) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1000 && u < 4) {
    v /= 1000;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", b) : fmt::format("{:.2f} {}", v, units[u]);
}
}  // namespace

QuantizeSummary summarize(const Plan& plan, const ExportResult& result, double seconds) {
  QuantizeSummary s;
  s.seconds = seconds;
  double sqnr_sum = 0;
  size_t sqnr_n = 0;
  for (const auto& e : plan.entries) {
    s.by_reason[fmt::format("{}: {}", action_name(e.action), e.reason)]++;
    if (e.action == Action::Quantize) s.quantized++;
    else if (e.action == Action::Keep || e.action == Action::Dequantize) s.kept++;
    else s.dropped++;
  }
  for (const auto& r : result.entries) {
    const PlanEntry& e = plan.entries[r.entry];
    s.bytes_in += r.bytes_in;
    s.bytes_out += r.bytes_out;
    if (e.action != Action::Quantize) continue;
    s.quantized_params += e.rows * e.cols * std::max<uint64_t>(e.bmm_experts, 1);
    s.quantized_bytes_out += r.bytes_out;
    s.block_scales[scale_method_name(r.scales.method)]++;
    if (!r.scales.fallback.empty()) s.scale_fallbacks[r.scales.fallback]++;
    if (r.scales.gptq) s.block_scales["+gptq"]++;
    if (!r.scales.gptq_fallback.empty()) s.scale_fallbacks["no GPTQ: " + r.scales.gptq_fallback]++;
    const double rel = r.error.rel_rmse();
    if (s.worst_module.empty() || rel > s.worst_rel_rmse) {
      s.worst_module = e.name;
      s.worst_rel_rmse = rel;
      s.worst_sqnr_db = r.error.sqnr_db();
    }
    if (std::isfinite(r.error.sqnr_db())) {
      sqnr_sum += r.error.sqnr_db();
      sqnr_n++;
    }
  }
  if (s.quantized_params)
    s.bits_per_weight = 8.0 * static_cast<double>(s.quantized_bytes_out) /
                        static_cast<double>(s.quantized_params);
  if (sqnr_n) s.mean_sqnr_db = sqnr_sum / static_cast<double>(sqnr_n);
  return s;
}

std::string format_summary(const QuantizeSummary& s) {
  std::string out = "== summary\n";
  out += fmt::format("  tensors: {} quantized, {} kept, {} dropped\n", s.quantized, s.kept,
                     s.dropped);
  for (const auto& [reason, n] : s.by_reason) out += fmt::format("    {:5}  {}\n", n, reason);
  out += fmt::format("  bytes: {} in -> {} out ({:.2f}x smaller)\n", human_bytes(s.bytes_in),
                     human_bytes(s.bytes_out),
                     s.bytes_out ? static_cast<double>(s.bytes_in) / s.bytes_out : 0.0);
  out += fmt::format("  quantized weights: {} parameters at {:.3f} bits per weight\n",
                     s.quantized_params, s.bits_per_weight);
  if (!s.worst_module.empty())
    out += fmt::format(
        "  error: worst tensor {} (relative RMSE {:.4f}, SQNR {:.2f} dB); mean SQNR {:.2f} dB\n",
        s.worst_module, s.worst_rel_rmse, s.worst_sqnr_db, s.mean_sqnr_db);
  if (!s.block_scales.empty()) {
    out += "  block scales:";
    for (const auto& [m, n] : s.block_scales) out += fmt::format(" {} {}", m, n);
    out += "\n";
    for (const auto& [why, n] : s.scale_fallbacks)
      out += fmt::format("    {:5}  {}{}\n", n, why.rfind("no GPTQ", 0) == 0 ? "" : "fell back to mse: ", why);
  }
  out += fmt::format("  time: {:.2f} s ({:.1f} MB/s of input)\n", s.seconds,
                     s.seconds > 0 ? s.bytes_in / 1e6 / s.seconds : 0.0);
  return out;
}

nlohmann::json summary_json(const QuantizeSummary& s) {
  return {{"quantized", s.quantized},
          {"kept", s.kept},
          {"dropped", s.dropped},
          {"by_reason", s.by_reason},
          {"bytes_in", s.bytes_in},
          {"bytes_out", s.bytes_out},
          {"quantized_params", s.quantized_params},
          {"bits_per_weight", s.bits_per_weight},
          {"worst_module", s.worst_module},
          {"worst_rel_rmse", s.worst_rel_rmse},
          {"worst_sqnr_db", std::isfinite(s.worst_sqnr_db) ? nlohmann::json(s.worst_sqnr_db)
                                                           : nlohmann::json(nullptr)},
          {"mean_sqnr_db", s.mean_sqnr_db},
          {"block_scales", s.block_scales},
          {"block_scale_fallbacks", s.scale_fallbacks},
          {"seconds", s.seconds}};
}

nlohmann::json entries_json(const Plan& plan, const ExportResult& result) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& r : result.entries) {
    const PlanEntry& e = plan.entries[r.entry];
    nlohmann::json j = {{"name", e.name},
                        {"action", action_name(e.action)},
                        {"reason", e.reason},
                        {"source", e.source.tensor},
                        {"bytes_in", r.bytes_in},
                        {"bytes_out", r.bytes_out},
                        {"seconds", r.seconds}};
    if (e.action == Action::Quantize) {
      j["shape"] = {e.rows, e.cols};
      if (e.bmm_experts > 0) j["bmm_experts"] = e.bmm_experts;  // E matrices of that shape
      j["amax"] = r.amax;
      j["weight_scale_2"] = r.s2;
      if (r.input_scale > 0) j["input_scale"] = r.input_scale;
      j["rel_rmse"] = r.error.rel_rmse();
      const double sq = r.error.sqnr_db();
      j["sqnr_db"] = std::isfinite(sq) ? nlohmann::json(sq) : nlohmann::json(nullptr);
      j["max_abs_err"] = r.error.max_abs_err;
      j["sign_flips"] = r.error.sign_flips;
      j["rounded_to_zero"] = r.error.rounded_to_zero;
      j["block_scales"] = scale_method_name(r.scales.method);
      if (r.scales.gptq) j["gptq"] = true;
      if (!r.scales.gptq_fallback.empty()) j["gptq_fallback"] = r.scales.gptq_fallback;
      if (!r.scales.fallback.empty())
        j["block_scales_fallback"] =
            r.scales.fallback + (r.scales.detail.empty() ? "" : ": " + r.scales.detail);
    }
    if (r.nonfinite.total() > 0) {
      j["nan"] = r.nonfinite.nan;
      j["inf"] = r.nonfinite.inf;
    }
    arr.push_back(j);
  }
  return arr;
}

std::vector<std::string> nonfinite_warnings(const Plan& plan, const ExportResult& result) {
  std::vector<std::string> w;
  for (const auto& r : result.entries) {
    if (r.nonfinite.total() == 0) continue;
    const PlanEntry& e = plan.entries[r.entry];
    w.push_back(fmt::format(
        "tensor '{}' ({} unquantized: {}) holds {} NaN and {} Inf values; written unchanged, so a "
        "loader computes with them (check the source checkpoint)",
        e.source.tensor, e.action == Action::Keep ? "kept" : "dequantized", e.reason,
        r.nonfinite.nan, r.nonfinite.inf));
  }
  return w;
}

}  // namespace fp4kit
