#pragma once
// Encodes one [rows, cols] weight with the run's block-scale method (quant_options.hpp) and says
// which method each tensor really got: hessian falls back to mse for a linear without usable
// statistics (none in the stats file, or fewer tokens than --hessian-min-tokens).
#include <cstdint>
#include <optional>
#include <string>

#include "fp4kit/numeric/distortion.hpp"

#include "fp4kit/quant/quant_options.hpp"
#include "fp4kit/quant/source_view.hpp"

namespace fp4kit {

struct ScaleOutcome {
  ScaleMethod method = ScaleMethod::Max;  // what was used for this tensor
  std::string fallback;                   // why it is not the requested method ("" if it is)
  std::string detail;                     // the numbers behind `fallback` (token counts)
  bool gptq = false;                      // codes from GPTQ (options.gptq and it applied)
  std::string gptq_fallback;              // options.gptq but not applied: why
  // The error of the written codes when the encoder measured it in the same pass (the numbers
  // of nvfp4_distortion); absent when the caller must measure it.
  std::optional<DistortionStats> error;
};

// `module`: the output module name (the stats file's key). Throws fp4kit::Error as nvfp4_quantize
// (the caller adds module and tensor names), and for a Hessian of the wrong width.
ScaleOutcome encode_weight(const SourceView& v, float s2, const QuantOptions& options,
                           const std::string& module, uint8_t* packed, uint8_t* scales);

}  // namespace fp4kit
