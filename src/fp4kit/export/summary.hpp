#pragma once
// The end-of-run summary: tensors by action and reason, bytes in/out, bits per weight, worst
// tensor error, time; as a table for people and JSON for --report.
#include <string>

#include <nlohmann/json.hpp>

#include "fp4kit/export/checkpoint_export.hpp"
#include "fp4kit/plan/plan.hpp"

namespace fp4kit {

struct QuantizeSummary {
  size_t quantized = 0, kept = 0, dropped = 0;
  std::map<std::string, size_t> by_reason;  // "quantize: <reason>" / "keep: <reason>"
  uint64_t bytes_in = 0, bytes_out = 0;
  uint64_t quantized_params = 0;
  uint64_t quantized_bytes_out = 0;
  double bits_per_weight = 0;     // over quantized weights (codes + block scales + globals)
  std::string worst_module;       // highest relative RMSE
  double worst_rel_rmse = 0, worst_sqnr_db = 0;
  double mean_sqnr_db = 0;
  double seconds = 0;
  // Block-scale method per quantized tensor: "mse" -> count; fall-backs: "reason" -> count.
  std::map<std::string, size_t> block_scales, scale_fallbacks;
};

QuantizeSummary summarize(const Plan& plan, const ExportResult& result, double seconds);
std::string format_summary(const QuantizeSummary& s);
nlohmann::json summary_json(const QuantizeSummary& s);
// Per-tensor results (name, action, reason, shape, amax, s2, input_scale, errors, bytes).
nlohmann::json entries_json(const Plan& plan, const ExportResult& result);
// One warning per tensor written unquantized with NaN/Inf values (the stream counted them),
// naming the tensor, the counts and why it was kept.
std::vector<std::string> nonfinite_warnings(const Plan& plan, const ExportResult& result);

}  // namespace fp4kit
