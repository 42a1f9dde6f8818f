#pragma once
// Small checked accessors for tokenizer.json components: every failure names the file and the
// component, so a malformed or unsupported tokenizer is reported precisely.
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

namespace fp4kit::text {

// Reads and parses a JSON file; throws fp4kit::Error naming it when missing or malformed.
nlohmann::json read_json_file(const std::filesystem::path& path);

// j["type"] as a string (component = "normalizer", "pre_tokenizer", ...).
std::string json_type_of(const nlohmann::json& j, const std::string& file, const std::string& component);

const nlohmann::json& json_array_at(const nlohmann::json& j, const char* key, const std::string& file,
                                    const std::string& component);
std::string json_string_at(const nlohmann::json& j, const char* key, const std::string& file,
                           const std::string& component);

// A "pattern" field: {"String": "..."} (a literal) or {"Regex": "..."}.
struct SplitPattern {
  std::string text;
  bool is_regex = false;
};
SplitPattern parse_split_pattern(const nlohmann::json& j, const std::string& file, const std::string& component);

}  // namespace fp4kit::text
