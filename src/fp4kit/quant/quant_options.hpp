#pragma once
// Options of one quantization run that change bytes (not presentation).
#include <cstdint>

#include "fp4kit/io/stats_file.hpp"
#include "fp4kit/numeric/nvfp4.hpp"

namespace fp4kit {

class CodeStore;

enum class OutputFormat { ModelOpt, CompressedTensors };

// How block scales are chosen (issue 15): max = amax_b / 6 rounded to E4M3 (ModelOpt, byte for
// byte); mse = the E4M3 code minimising the block's squared error; hessian = the code minimising
// dw^T H_j dw with H_j from the stats file (falls back to mse per linear, and says so).
enum class ScaleMethod { Max, Mse, Hessian };

const char* scale_method_name(ScaleMethod m);

struct QuantOptions {
  OutputFormat format = OutputFormat::ModelOpt;
  bool weights_only = false;            // W4A16: no input scales
  ScaleForm scale_form = ScaleForm::Gpu;
  // When no calibration token reached any member of an input group (e.g. all experts of a layer
  // idle): fail (default), or take the largest input amax of the same projection kind elsewhere.
  bool input_scale_fallback = false;
  ScaleMethod scales = ScaleMethod::Max;
  float global_norm = 448.0f;  // M in weight_scale_2 = amax / (6 M): 448 (ModelOpt) or 256
  // hessian: the statistics holding <m>.input_hessian_blocks, and the fewest tokens a linear
  // needs for its own Hessian (below it: mse, reported).
  const ActivationStats* stats = nullptr;
  int64_t hessian_min_tokens = 1024;
  // GPTQ on top of the chosen scales (needs <m>.input_xtx in the stats); dampening fraction.
  bool gptq = false;
  double gptq_damp = 0.01;
  // quantize --gptq --data: the codes and block scales the engine's layer pass chose (with each
  // layer's X^T X); a tensor found there is taken as stored instead of encoded.
  const CodeStore* codes = nullptr;
  // A tensor that quantization destroys (DistortionStats::destroyed) fails the run, whatever the
  // verify level; true commits it anyway (only to compare with tools that write such tensors).
  bool allow_destroyed = false;
};

}  // namespace fp4kit
