#pragma once
// The jobs behind `fp4kit verify`, `inspect`, `calibrate` and `eval` (quantize: quantize_job.hpp),
// called by the command line and by the Python binding (python/fp4kit) alike. A job takes its
// options as a struct, throws fp4kit::Error for bad input, and returns its result; with `quiet`
// it writes nothing on stdout/stderr (the command line prints the result itself).
#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "fp4kit/verify/verify.hpp"

namespace fp4kit::cli {

struct VerifyArgs {
  std::string dir;
  std::string source;  // empty: structural checks only
  std::string report;  // write the JSON report here when not empty
  int threads = 0;
  double max_rel_rmse = 0;
};
verify::VerifyReport run_verify_job(const VerifyArgs& args);

// What `fp4kit inspect --json` prints.
nlohmann::json inspect_report(const std::string& dir);

struct CalibrateArgs {
  std::string src, data, out, device = "auto", text_field = "text";
  int64_t samples = 128, seq_len = 512;
  bool all_experts = false;
  bool gpu_fp32 = false;  // CUDA: plain float32 products instead of TF32
  // "" (none), "raw" or "w4a4": also collect the 16x16 diagonal blocks of X^T X per linear
  // (quantize --scales hessian); w4a4 runs the model twice, the second time quantizing each
  // linear's input as W4A4 kernels do with the input_scale the first pass measured.
  std::string hessian;
  bool full_xtx = false;  // with hessian: also all of X^T X per linear (quantize --gptq)
  int threads = 0;
  size_t chunk = 0;  // tokens per block of the linears; 0: 2048 on the CPU, 16384 on a GPU
  bool quiet = false;
  std::function<void(int64_t layers_done, int64_t layers)> on_layer;  // after each layer
};
struct CalibrateOutcome {
  size_t samples = 0, seq_len = 0, tokens = 0;
  size_t linears = 0;                       // linears with statistics
  std::vector<std::string> idle_experts;    // experts no token was routed to
  double seconds = 0, forward_seconds = 0;
  std::string device;  // the device that ran it, in words
};
CalibrateOutcome run_calibrate_job(const CalibrateArgs& args);

struct EvalArgs {
  std::string quant, base, data, save_base, base_logits, dump_logits, text_field = "text";
  size_t ctx = 512, chunks = 0, tokens = 0;
  bool no_act_quant = false;
  int threads = 0;
  std::string device = "auto";  // auto | cpu | cuda[:N]
  bool gpu_fp32 = false;
};
// What `fp4kit eval --json` prints.
nlohmann::json run_eval_job(const EvalArgs& args);

}  // namespace fp4kit::cli
