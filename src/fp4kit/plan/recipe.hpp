#pragma once
// Recipe files for `fp4kit quantize --recipe FILE`: an ordered list of include/exclude rules
// (later wins, like ModelOpt's quant_cfg) plus plan options. Two spellings, chosen by the first
// non-blank character of the file:
//
// Text (one directive per line, `#` starts a comment):
//     # keep the attention of the first layer in BF16
//     exclude model.layers.0.self_attn.*
//     include model.layers.0.self_attn.o_proj
//     quantize_linear_attn true
//
// JSON (a file starting with '{'):
//     {"rules": [{"exclude": "model.layers.0.self_attn.*"},
//                {"include": "model.layers.0.self_attn.o_proj"}],
//      "quantize_linear_attn": true}
//
// Each rule's origin is "FILE:LINE" (JSON: "FILE:rules[i]") so plan reasons and errors name it.
#include <filesystem>
#include <string>

#include "fp4kit/plan/plan.hpp"

namespace fp4kit {

// Reads a recipe; throws fp4kit::Error naming FILE:LINE for anything malformed.
PlanOptions load_recipe(const std::filesystem::path& path);
// Parses recipe text; `label` names it in errors and rule origins.
PlanOptions parse_recipe(const std::string& text, const std::string& label);
// Appends a recipe's rules to `options` (after those already there) and takes its options.
void apply_recipe(PlanOptions& options, const PlanOptions& recipe);

}  // namespace fp4kit
