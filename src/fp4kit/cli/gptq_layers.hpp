#pragma once
// quantize --gptq --data (and --scales hessian --data): the engine runs the source model over the
// calibration windows one decoder layer at a time; after each layer, that layer's linears are
// quantized with the X^T X (and Hessian blocks) of their inputs gathered in that layer only, and
// the statistics are dropped. Memory: one layer's X^T X (K x K doubles per linear of the layer;
// never the model's, which does not fit a stats file for big MoE models) and one layer's codes;
// the codes of finished layers wait in an unnamed scratch file (CodeStore) until the export
// stream writes them in output order.
//
// Not sequential, the inputs are those of the unquantized model: the codes are those of
// `calibrate --hessian raw|w4a4 --full-xtx` + `quantize --gptq --stats`, byte for byte.
// Sequential (--gptq-sequential), each layer is run again with its quantized weights (W4A4:
// and quantized inputs, as `fp4kit eval` runs the output) before the next layer sees it.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "fp4kit/io/checkpoint.hpp"
#include "fp4kit/io/stats_file.hpp"
#include "fp4kit/plan/plan.hpp"
#include "fp4kit/quant/code_store.hpp"
#include "fp4kit/quant/quant_options.hpp"

namespace fp4kit::cli {

struct LayerPassArgs {
  std::string data, text_field = "text";
  int64_t samples = 128, seq_len = 512;
  bool sequential = false;
  // W4A4: the calibrate stats (the X^T X inputs are NVFP4-quantized with their input amax);
  // null: the inputs as they are (W4A16).
  const ActivationStats* w4a4_stats = nullptr;
  std::string scratch_dir;  // where the CodeStore's unnamed file goes
  bool quiet = false;
};

struct LayerPassResult {
  std::unique_ptr<CodeStore> codes;
  size_t layers = 0, linears = 0, tokens = 0;
  uint64_t peak_stats_bytes = 0;   // the most X^T X + Hessian-block bytes held at once
  uint64_t total_stats_bytes = 0;  // those of all layers together (what a stats file holds)
  double seconds = 0;
};

LayerPassResult run_layer_pass(const Checkpoint& source, const Plan& plan,
                               const std::vector<float>& input_scales, const QuantOptions& quant,
                               const LayerPassArgs& args);

}  // namespace fp4kit::cli
