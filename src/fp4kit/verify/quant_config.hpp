#pragma once
// What the configuration files of an NVFP4 checkpoint declare, read the way vLLM reads them:
// config.json "quantization_config" first (also under text_config, or "compression_config"),
// then hf_quant_config.json (ModelOpt's nested form). Config-level findings are reported while
// reading (check ids config.*).
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fp4kit/verify/exclusion.hpp"
#include "fp4kit/verify/findings.hpp"

namespace fp4kit::verify {

enum class QuantFormat { None, ModelOpt, CompressedTensors };
std::string_view format_name(QuantFormat f);

struct DeclaredQuant {
  QuantFormat format = QuantFormat::None;
  std::string quant_algo;      // "NVFP4", "W4A16_NVFP4", "NVFP4A16"
  bool weights_only = false;
  ExclusionList exclusions;    // the list the loader uses (flat ignore first)
  std::string exclusions_origin;  // "config.json quantization_config.ignore", ...
  // compressed-tensors targets of the config groups ("Linear", exact names or "re:" regexes).
  std::vector<std::string> targets;
  ExclusionList target_matcher;  // the same targets, compiled (compressed-tensors matching)
  // Does a loader build `module` (a linear layer) quantized according to the targets?
  bool targets_module(std::string_view module) const;
};

// `config` is config.json (empty object when absent); `dir` is where hf_quant_config.json lives.
DeclaredQuant read_declared_quant(const nlohmann::json& config, const std::filesystem::path& dir,
                                  Findings& out);

}  // namespace fp4kit::verify
