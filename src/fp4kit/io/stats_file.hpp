#pragma once
// The activation statistics file: written by `fp4kit calibrate`, read by `fp4kit quantize --stats`.
// A safetensors file (so any tool can read it) holding, per linear module <m> (checkpoint module
// names as in the OUTPUT, i.e. fused experts already split: model.layers.0.mlp.experts.3.gate_proj):
//   <m>.input_amax     F32 []   max |x| over every calibration token entering the linear
//   <m>.input_sq_sum   F64 [K]  per input channel sum of x^2 (optional)
//   <m>.token_count    I64 []   tokens that entered the linear (routed tokens for experts)
//   <m>.input_hessian_blocks F64 [K/16, 16, 16]  (optional, `calibrate --hessian`) the 16x16
//                      diagonal blocks of X^T X (sum over tokens of x x^T; W4A4: of the inputs
//                      after NVFP4 activation quantization), for `quantize --scales hessian`
//   <m>.input_xtx      F64 [K, K]  (optional, `calibrate --hessian ... --full-xtx`) all of X^T X
//                      (same inputs), for `quantize --gptq`
// and per routed expert module prefix <e> (model.layers.0.mlp.experts.3):
//   <e>.routed_tokens  I64 []   tokens the router sent there (even with --all-experts)
// __metadata__: format="fp4kit-stats", version="1" (or "2" when Hessian blocks are present, so
// that a quantize that predates them fails on the version instead of on an unknown tensor), source,
// source_fingerprint (the calibrated checkpoint's checkpoint_fingerprint; quantize refuses stats
// of another model), data, samples, seq_len, tokens,
// all_experts ("true"/"false"), compute ("float32").
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace fp4kit {

struct ActivationStats {
  std::map<std::string, float> input_amax;
  std::map<std::string, std::vector<double>> input_sq_sum;
  std::map<std::string, int64_t> token_count;
  std::map<std::string, std::vector<double>> hessian_blocks;  // [K/16 * 256]
  std::map<std::string, std::vector<double>> xtx;             // [K * K]
  std::map<std::string, int64_t> routed_tokens;
  std::map<std::string, std::string> metadata;
};

// Throws fp4kit::Error naming the file for anything malformed (wrong format tag, dtype, shape,
// a negative / NaN amax).
ActivationStats read_stats_file(const std::filesystem::path& path);
// Atomic: writes path.partial then renames.
void write_stats_file(const std::filesystem::path& path, const ActivationStats& stats);

// The stats name of expert `expert` of a 3-D BMM expert tensor (gpt-oss): its input statistics
// (amax, sums) are the tensor's, shared by all experts under `module`, but its Hessian blocks and
// token count are its own, under "<parent>.<expert>.<leaf>" for module "<parent>.<leaf>"
// (model.layers.0.mlp.experts.gate_up_proj -> model.layers.0.mlp.experts.3.gate_up_proj).
std::string bmm_expert_stats_name(const std::string& module, uint64_t expert);

}  // namespace fp4kit
