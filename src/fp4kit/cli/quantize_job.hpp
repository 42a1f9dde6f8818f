#pragma once
// The whole quantize job (plan, stream, atomic write, verification, summary), shared by
// `fp4kit quantize` and `fp4kit demo`.
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
};

struct QuantizeOutcome {
  QuantizeSummary summary;
  size_t verify_warnings = 0;
};

// Returns the exit code; throws fp4kit::Error for bad input. `outcome` may be null.
int run_quantize_job(const QuantizeArgs& args, QuantizeOutcome* outcome = nullptr);

}  // namespace fp4kit::cli
