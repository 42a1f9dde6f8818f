#pragma once
// The "post_processor" of a tokenizer.json, reduced to what a single sequence needs: the ids it
// puts before and after the encoded text when special tokens are requested
// (TemplateProcessing, RobertaProcessing, BertProcessing, ByteLevel = nothing, Sequence).
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fp4kit::text {

struct SpecialTokenFrame {
  std::vector<int32_t> prefix;
  std::vector<int32_t> suffix;
};

SpecialTokenFrame parse_post_processor(const nlohmann::json& j, const std::string& file);

}  // namespace fp4kit::text
