#pragma once
// The JSON a loader reads to know the checkpoint is NVFP4: config.json["quantization_config"]
// and, for format A, hf_quant_config.json (spec sections 5-6).
#include <nlohmann/json.hpp>

#include "fp4kit/plan/plan.hpp"
#include "fp4kit/quant/quant_options.hpp"

namespace fp4kit {

// config.json["quantization_config"] for the chosen format.
nlohmann::ordered_json quantization_config(const Plan& plan, const QuantOptions& options);
// hf_quant_config.json (format A).
nlohmann::ordered_json hf_quant_config(const Plan& plan, const QuantOptions& options);

}  // namespace fp4kit
