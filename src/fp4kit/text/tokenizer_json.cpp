#include "fp4kit/text/tokenizer_json.hpp"

#include <fstream>
#include <sstream>

#include "fp4kit/error.hpp"

namespace fp4kit::text {

nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open file");
  std::stringstream buf;
  buf << in.rdbuf();
  try {
    return nlohmann::json::parse(buf.str());
  } catch (const nlohmann::json::exception& e) {
    throw Error(path.string() + ": invalid JSON: " + e.what());
  }
}

std::string json_type_of(const nlohmann::json& j, const std::string& file, const std::string& component) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    throw Error(file + ": " + component + " has no string field 'type'");
  return j["type"].get<std::string>();
}

const nlohmann::json& json_array_at(const nlohmann::json& j, const char* key, const std::string& file,
                                    const std::string& component) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_array())
    throw Error(file + ": " + component + " needs an array field '" + key + "'");
  return j[key];
}

std::string json_string_at(const nlohmann::json& j, const char* key, const std::string& file,
                           const std::string& component) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_string())
    throw Error(file + ": " + component + " needs a string field '" + key + "'");
  return j[key].get<std::string>();
}

SplitPattern parse_split_pattern(const nlohmann::json& j, const std::string& file, const std::string& component) {
  if (!j.is_object() || !j.contains("pattern") || !j["pattern"].is_object())
    throw Error(file + ": " + component + " needs an object field 'pattern'");
  const auto& p = j["pattern"];
  if (p.contains("Regex") && p["Regex"].is_string()) return {p["Regex"].get<std::string>(), true};
  if (p.contains("String") && p["String"].is_string()) return {p["String"].get<std::string>(), false};
  throw Error(file + ": " + component + " pattern must be {\"String\": ...} or {\"Regex\": ...}");
}

}  // namespace fp4kit::text
