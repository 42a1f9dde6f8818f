#pragma once
// fp4kit verify: re-reads an NVFP4 checkpoint as a loader would (ModelOpt format A or
// compressed-tensors format B) and checks it against NVFP4-SPEC.md section 9, the known ways an
// NVFP4 checkpoint fails silently. With a source checkpoint it also measures every quantized
// tensor's error against the source.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fp4kit::verify {

struct Finding {
  enum Severity { Error, Warning, Info };
  Severity severity = Error;
  std::string check;    // the rule, e.g. "fusion.weight_scale_2" (see check_catalog())
  std::string module;   // the module or tensor concerned ("" for whole-checkpoint findings)
  std::string message;  // one sentence naming the module, the values and why it matters
};
std::string_view severity_name(Finding::Severity s);

// One line of the "checks passed/failed" table.
struct CheckInfo {
  std::string_view id;
  std::string_view description;
};
// Every rule verify knows, in report order.
const std::vector<CheckInfo>& check_catalog();

struct VerifyOptions {
  // The checkpoint the output was made from (BF16/FP16/FP32, FP8 block-scaled, MXFP4 experts).
  // Empty: structural checks only. Given: every quantized tensor is dequantized and compared
  // with it.
  std::filesystem::path source;
  // Informational: the numeric checks run exactly when `source` is set.
  bool numeric = false;
  // Relative RMSE above which a tensor is an error (see numeric_checks.hpp for how the default
  // was measured).
  double max_rel_rmse = 0;  // 0 = the measured default
};

// Error statistics of one quantized tensor against its source.
struct TensorErrorStats {
  std::string module;
  uint64_t rows = 0, cols = 0;
  double rel_rmse = 0;
  double sqnr_db = 0;
  double max_abs_err = 0;
  double source_amax = 0;
  uint64_t count = 0;
  uint64_t sign_flips = 0;
  uint64_t rounded_to_zero = 0;
  uint64_t nonzero_source = 0;  // source elements != 0 (denominator of the rounded-to-zero share)
  // 3-D BMM experts (gpt-oss, Llama-4): rows/cols are one expert's [N, K], the stats above
  // aggregate all experts, and the worst expert is named here. 0 / -1 for 2-D modules.
  uint64_t experts = 0;
  int64_t worst_expert = -1;
  double worst_rel_rmse = 0;
};

struct VerifyReport {
  std::filesystem::path dir;
  std::string format;      // "modelopt", "compressed-tensors" or "" when not an NVFP4 checkpoint
  std::string quant_algo;  // "NVFP4", "W4A16_NVFP4", "NVFP4A16" (compressed-tensors weight-only)
  bool weights_only = false;  // W4A16 (no activation scales) versus W4A4
  std::vector<Finding> findings;

  // Counts.
  uint64_t tensors = 0;
  uint64_t modules_quantized = 0;
  uint64_t modules_unquantized_linear = 0;  // 2-D linear-like modules left in a float dtype
  uint64_t modules_excluded = 0;            // matched by the exclusion list
  uint64_t fusion_groups = 0;
  uint64_t linear_params = 0;     // elements of all linear-like weights
  uint64_t quantized_params = 0;  // of which NVFP4
  uint64_t total_params = 0;      // every tensor (NVFP4 weights counted as N*K)
  uint64_t actual_bytes = 0;      // sum of tensor bytes on disk
  uint64_t expected_bytes = 0;    // the same if every module declared NVFP4 really were NVFP4
  std::vector<int> supported_tp;  // of 1, 2, 4, 8

  bool structural = false;  // the tensor checks ran (false when no NVFP4 config was found)
  // Numeric comparison (only when a source was given).
  bool numeric = false;
  std::filesystem::path source;
  double max_rel_rmse = 0;  // the threshold used
  std::vector<TensorErrorStats> tensor_errors;  // in checkpoint order
  double seconds = 0;

  bool ok() const;  // no finding of severity Error
  size_t count(Finding::Severity s) const;
  double quantized_fraction() const;  // quantized_params / linear_params
  nlohmann::json to_json() const;
  std::string format_table() const;   // human report: checks, findings, summary
};

// Runs every structural check on checkpoint `dir`, and the numeric ones when options.source is
// set. Never throws for a bad checkpoint: problems, a `dir` that cannot be opened included
// (check "checkpoint.read"), become findings. Throws fp4kit::Error when the source cannot be
// opened (a wrong --source is the caller's mistake, not a property of the checkpoint).
VerifyReport verify_checkpoint(const std::filesystem::path& dir, const VerifyOptions& options);

}  // namespace fp4kit::verify
