#pragma once
// The whole quantize job (plan, stream, atomic write, verification, summary), shared by
// `fp4kit quantize`, `fp4kit demo` and the Python binding (python/fp4kit).
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "fp4kit/export/summary.hpp"
#include "fp4kit/plan/plan.hpp"

namespace fp4kit::cli {

struct QuantizeArgs {
  std::string source, out;
  std::string format = "modelopt";
  bool weights_only = false;
  std::string stats;
  std::string recipe;
  std::vector<Rule> rules;  // --include/--exclude in command-line order (after the recipe's)
  bool dry_run = false;
  std::string plan_json;
  int threads = 0;
  std::string report;
  std::string scale_form = "gpu";
  std::string max_shard_size = "5GB";
  bool force = false;
  std::string verify = "structural";
  bool input_scale_fallback = false;
  bool quantize_linear_attn = false;
  // Front ends other than the command line: no text on stdout/stderr (warnings and the report
  // come back in QuantizeOutcome), and per-tensor progress through on_progress instead of the bar.
  bool quiet = false;
  std::function<void(size_t done, size_t total, const std::string& tensor, uint64_t bytes)>
      on_progress;
  std::string scales = "max";  // max | mse | hessian
  int global_norm = 448;       // 448 | 256
  int64_t hessian_min_tokens = 1024;
  bool gptq = false;
  double gptq_damp = 0.01;
  // --data: X^T X per layer from the engine (gptq_layers.hpp) instead of a stats file.
  std::string data, text_field = "text";
  int64_t samples = 128, seq_len = 512;
  bool gptq_sequential = false;
  bool allow_destroyed = false;
};

struct QuantizeOutcome {
  QuantizeSummary summary;
  size_t verify_warnings = 0;
  std::vector<std::string> warnings;  // the plan's warnings (printed unless quiet)
  nlohmann::json report;              // what --report writes (plan, tensors, summary, verify)
};

// Returns the exit code; throws fp4kit::Error for bad input. `outcome` may be null.
int run_quantize_job(const QuantizeArgs& args, QuantizeOutcome* outcome = nullptr);

}  // namespace fp4kit::cli
