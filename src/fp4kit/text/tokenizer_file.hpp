#pragma once
// Reads tokenizer.json in one SAX pass. model.vocab and model.merges (nearly all of an 11 MB
// Qwen file) go straight into their final containers instead of a JSON tree, which makes
// loading several times faster; everything else is kept as JSON for the component parsers.
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "fp4kit/text/token_map.hpp"

namespace fp4kit::text {

struct TokenizerFile {
  // The document, with model.vocab / model.merges set to null when they were extracted below.
  nlohmann::json doc;
  bool vocab_extracted = false;
  TokenMap vocab;
  bool merges_extracted = false;
  std::vector<std::pair<std::string, std::string>> merges;  // both "a b" and ["a", "b"] forms
  std::string merges_error;  // first malformed merge entry, reported when the model is built
};

// Throws fp4kit::Error naming the file when it is missing or not valid JSON.
TokenizerFile read_tokenizer_file(const std::filesystem::path& path);

}  // namespace fp4kit::text
