#pragma once
// Options of one quantization run that change bytes (not presentation).
#include <cstdint>

#include "fp4kit/numeric/nvfp4.hpp"

namespace fp4kit {

enum class OutputFormat { ModelOpt, CompressedTensors };

struct QuantOptions {
  OutputFormat format = OutputFormat::ModelOpt;
  bool weights_only = false;            // W4A16: no input scales
  ScaleForm scale_form = ScaleForm::Gpu;
  // When no calibration token reached any member of an input group (e.g. all experts of a layer
  // idle): fail (default), or take the largest input amax of the same projection kind elsewhere.
  bool input_scale_fallback = false;
};

}  // namespace fp4kit
