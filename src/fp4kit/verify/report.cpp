// The verify report: the catalog of rules, JSON and the human table.
#include <fmt/core.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>

#include "fp4kit/verify/verify.hpp"

namespace fp4kit::verify {

std::string_view severity_name(Finding::Severity s) {
  switch (s) {
    case Finding::Error: return "error";
    case Finding::Warning: return "warning";
    case Finding::Info: return "info";
  }
  return "?";
}

const std::vector<CheckInfo>& check_catalog() {
  static const std::vector<CheckInfo> kCatalog = {
      {"checkpoint.read", "the checkpoint opens (headers, index and shards agree)"},
      {"config.missing", "a quantization config declares NVFP4"},
      {"config.files", "config.json and hf_quant_config.json are both present (ModelOpt)"},
      {"config.format", "quant_method, quant_algo, group_size 16, compressed-tensors scheme"},
      {"config.hf_quant_keys", "hf_quant_config.json has quant_algo, kv_cache_quant_algo, group_size, exclude_modules"},
      {"config.agree", "hf_quant_config.json and config.json say the same thing"},
      {"config.ct_compat", "no keys that older compressed-tensors rejects"},
      {"tensor.missing", "every quantized module has weight_scale and its global scale"},
      {"tensor.dtype", "U8 weights, F8_E4M3 block scales, F32 global scales"},
      {"tensor.shape", "[N, K/2] weights, [N, K/16] scales, scalar globals, 2-D modules"},
      {"tensor.naming", "tensor names of the declared format only"},
      {"tensor.orphan", "no scale tensor without its packed weight"},
      {"tensor.mxfp4", "no MXFP4 _blocks/_scales tensors under an NVFP4 label"},
      {"quant.unquantized", "nothing declared NVFP4 is still BF16/FP16/FP32 (the seed bug)"},
      {"quant.total", "quantized share of linear parameters, expected versus actual size"},
      {"fusion.partial", "fused modules are all NVFP4 or all unquantized"},
      {"fusion.weight_scale_2", "q/k/v, gate/up (every expert), MLA pair share the global weight scale"},
      {"fusion.input_scale", "fused modules share the input scale"},
      {"input_scale.missing", "W4A4: every quantized linear has an input scale"},
      {"input_scale.value", "input scales are finite and > 0"},
      {"input_scale.unexpected", "weight-only: no input scales"},
      {"input_scale.experts", "one input scale per projection kind across a layer's experts"},
      {"experts.missing", "every routed expert of a MoE layer is present"},
      {"scale.global", "global weight scales are finite and > 0"},
      {"scale.nan", "no E4M3 NaN block-scale codes (0x7F/0xFF)"},
      {"scale.negative", "no negative block scales"},
      {"scale.zero", "zero block scales only where the source block is zero"},
      {"role.quantized", "routers, gates, norms, embeddings, vision parts unquantized"},
      {"exclude.quantized", "no excluded module is quantized"},
      {"exclude.substring", "no exclusion is a substring of a quantized module (vLLM legacy rule)"},
      {"exclude.has_scales", "excluded modules carry no scale tensors"},
      {"exclude.unlisted", "unquantized routers, lm_head and other linears are listed as excluded"},
      {"exclude.unmatched", "every exclusion matches a module"},
      {"shape.k16", "K % 16 == 0 for every quantized module"},
      {"tp.shard", "K % 16 per tensor-parallel shard for TP 1, 2, 4, 8"},
      {"numeric.source", "every quantized tensor has a comparable source tensor (--source)"},
      {"numeric.error", "relative RMSE against the source within NVFP4 rounding (--source)"},
      {"numeric.sign_flips", "no weight changes sign (--source)"},
      {"keep.missing", "every source tensor is in the output (--source)"},
      {"keep.changed", "kept tensors are byte-identical to the source (--source)"},
  };
  return kCatalog;
}

namespace {

// "failed" / "warning" / "passed", or "skipped" when the check did not run.
std::string_view check_status(const VerifyReport& r, std::string_view id, size_t errors, size_t warnings) {
  if (errors) return "failed";
  if (warnings) return "warning";
  const bool needs_source = id.rfind("numeric.", 0) == 0 || id.rfind("keep.", 0) == 0 || id == "scale.zero";
  const bool always = id.rfind("config.", 0) == 0 || id == "checkpoint.read";
  if (!always && !r.structural) return "skipped";
  if (needs_source && !r.numeric && id != "scale.zero") return "skipped";
  return "passed";
}

}  // namespace

bool VerifyReport::ok() const { return count(Finding::Error) == 0; }

size_t VerifyReport::count(Finding::Severity s) const {
  return static_cast<size_t>(std::count_if(findings.begin(), findings.end(),
                                           [s](const Finding& f) { return f.severity == s; }));
}

double VerifyReport::quantized_fraction() const {
  return linear_params ? static_cast<double>(quantized_params) / static_cast<double>(linear_params) : 0.0;
}

nlohmann::json VerifyReport::to_json() const {
  using nlohmann::json;
  json j;
  j["checkpoint"] = dir.string();
  j["ok"] = ok();
  j["format"] = format;
  j["quant_algo"] = quant_algo;
  j["weights_only"] = weights_only;
  j["mode"] = format.empty() ? "" : (weights_only ? "W4A16" : "W4A4");
  j["counts"] = {{"errors", count(Finding::Error)},
                 {"warnings", count(Finding::Warning)},
                 {"infos", count(Finding::Info)},
                 {"tensors", tensors},
                 {"modules_quantized", modules_quantized},
                 {"modules_unquantized_linear", modules_unquantized_linear},
                 {"modules_excluded", modules_excluded},
                 {"fusion_groups", fusion_groups}};
  j["params"] = {{"linear", linear_params},
                 {"quantized", quantized_params},
                 {"total", total_params},
                 {"quantized_fraction_of_linear", quantized_fraction()}};
  j["size"] = {{"actual_bytes", actual_bytes}, {"expected_bytes", expected_bytes}};
  j["supported_tp"] = supported_tp;
  json checks = json::array();
  for (const auto& c : check_catalog()) {
    size_t e = 0, w = 0, i = 0;
    for (const auto& f : findings) {
      if (f.check != c.id) continue;
      (f.severity == Finding::Error ? e : f.severity == Finding::Warning ? w : i)++;
    }
    checks.push_back({{"id", c.id},
                      {"description", c.description},
                      {"status", check_status(*this, c.id, e, w)},
                      {"errors", e},
                      {"warnings", w},
                      {"infos", i}});
  }
  j["checks"] = checks;
  json fs = json::array();
  for (const auto& f : findings)
    fs.push_back({{"severity", severity_name(f.severity)}, {"check", f.check}, {"module", f.module},
                  {"message", f.message}});
  j["findings"] = fs;
  if (numeric) {
    json ts = json::array();
    for (const auto& t : tensor_errors) {
      ts.push_back({{"module", t.module}, {"rows", t.rows}, {"cols", t.cols},
                    {"rel_rmse", t.rel_rmse},
                    {"sqnr_db", std::isfinite(t.sqnr_db) ? json(t.sqnr_db) : json(nullptr)},
                    {"max_abs_err", t.max_abs_err}, {"sign_flips", t.sign_flips},
                    {"rounded_to_zero", t.rounded_to_zero}, {"count", t.count}});
      if (t.experts > 0) {  // BMM: per-expert [rows, cols], stats over all experts
        ts.back()["experts"] = t.experts;
        ts.back()["worst_expert"] = t.worst_expert;
        ts.back()["worst_expert_rel_rmse"] =
            std::isfinite(t.worst_rel_rmse) ? json(t.worst_rel_rmse) : json(nullptr);
      }
    }
    j["numeric"] = {{"source", source.string()}, {"max_rel_rmse", max_rel_rmse}, {"tensors", ts}};
  }
  j["seconds"] = seconds;
  return j;
}

std::string VerifyReport::format_table() const {
  std::string s;
  s += fmt::format("fp4kit verify {}\n", dir.string());
  s += fmt::format("format: {}  algo: {}  mode: {}\n\n", format.empty() ? "(none)" : format,
                   quant_algo.empty() ? "-" : quant_algo,
                   format.empty() ? "-" : (weights_only ? "weights-only (W4A16)" : "W4A4"));
  s += fmt::format("{:<24} {:<8} {:>6} {:>8}  {}\n", "check", "status", "errors", "warnings",
                   "rule");
  for (const auto& c : check_catalog()) {
    size_t e = 0, w = 0;
    for (const auto& f : findings) {
      if (f.check != c.id) continue;
      if (f.severity == Finding::Error) ++e;
      else if (f.severity == Finding::Warning) ++w;
    }
    std::string status(check_status(*this, c.id, e, w));
    if (status == "failed") status = "FAILED";
    s += fmt::format("{:<24} {:<8} {:>6} {:>8}  {}\n", c.id, status, e, w, c.description);
  }
  if (!findings.empty()) {
    s += "\nfindings:\n";
    // Errors first, then warnings, then infos; each list in check order.
    for (auto sev : {Finding::Error, Finding::Warning, Finding::Info}) {
      size_t shown = 0, total = 0;
      std::map<std::string, size_t> per_check;
      for (const auto& f : findings) {
        if (f.severity != sev) continue;
        ++total;
        // Long lists (every expert of a broken checkpoint) are summarised after 20 per check.
        if (++per_check[f.check] > 20) continue;
        ++shown;
        s += fmt::format("  {:<7} {:<22} {}\n", severity_name(sev), f.check, f.message);
      }
      if (shown < total)
        s += fmt::format("  ... {} more {} findings (see --report)\n", total - shown, severity_name(sev));
    }
  }
  s += "\nsummary:\n";
  s += fmt::format("  tensors {}, quantized modules {}, unquantized linear modules {}, excluded {}, "
                   "fusion groups {}\n", tensors, modules_quantized, modules_unquantized_linear,
                   modules_excluded, fusion_groups);
  s += fmt::format("  linear parameters NVFP4: {:.2f}% ({} of {}); all parameters {}\n",
                   100.0 * quantized_fraction(), quantized_params, linear_params, total_params);
  s += fmt::format("  size: actual {:.2f} MB, expected {:.2f} MB\n", actual_bytes / 1e6,
                   expected_bytes / 1e6);
  s += fmt::format("  tensor parallel sizes supported: [{}]\n", fmt::join(supported_tp, ", "));
  if (numeric) {
    const TensorErrorStats* worst = nullptr;
    double sum = 0;
    for (const auto& t : tensor_errors) {
      sum += t.rel_rmse;
      if (!worst || t.rel_rmse > worst->rel_rmse) worst = &t;
    }
    s += fmt::format("  compared with {}: {} tensors, mean rel-RMSE {:.4f}", source.string(),
                     tensor_errors.size(), tensor_errors.empty() ? 0.0 : sum / tensor_errors.size());
    if (worst)
      s += fmt::format(", worst {:.4f} ({}, SQNR {:.1f} dB)", worst->rel_rmse, worst->module,
                       worst->sqnr_db);
    s += fmt::format("; threshold {:.3f}\n", max_rel_rmse);
  }
  s += fmt::format("  result: {} ({} errors, {} warnings) in {:.2f} s\n", ok() ? "PASS" : "FAIL",
                   count(Finding::Error), count(Finding::Warning), seconds);
  return s;
}

}  // namespace fp4kit::verify
