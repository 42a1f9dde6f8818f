#pragma once
// JSON parsing for untrusted checkpoint files. nlohmann::json keeps the LAST of two equal keys
// silently; a safetensors header or index with a name listed twice must be an error instead, so
// this parser reports duplicate keys (at any depth) and bounds the nesting depth.
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace fp4kit {

inline constexpr int kMaxJsonDepth = 64;

// Parses `text`; throws fp4kit::Error "<label>: <what>" for invalid JSON, a duplicate key
// (naming it) or nesting deeper than kMaxJsonDepth.
nlohmann::json parse_json_strict(std::string_view text, std::string_view label);

// The same depth bound, but the last of two equal keys wins (as in Python's json): for config
// files that transformers loads, so a quirky but loadable config is not refused.
nlohmann::json parse_json_bounded(std::string_view text, std::string_view label);

// What a value is, for messages: "an object", "an array", "a string", "a number", "a boolean",
// "null" ("quantization_config is malformed (a string, expected an object)").
std::string json_kind(const nlohmann::json& v);

}  // namespace fp4kit
