#include "fp4kit/plan/recipe.hpp"

#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include "fp4kit/error.hpp"

namespace fp4kit {
namespace {

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

bool parse_bool(const std::string& v, bool* out) {
  if (v == "true" || v == "1" || v == "yes" || v == "on") return *out = true, true;
  if (v == "false" || v == "0" || v == "no" || v == "off") return *out = false, true;
  return false;
}

PlanOptions parse_text(const std::string& text, const std::string& label) {
  PlanOptions o;
  std::istringstream in(text);
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    line = trim(line);
    if (line.empty()) continue;
    size_t sp = line.find_first_of(" \t");
    const std::string word = line.substr(0, sp);
    const std::string arg = sp == std::string::npos ? "" : trim(line.substr(sp));
    const std::string where = fmt::format("{}:{}", label, lineno);
    if (word == "include" || word == "exclude") {
      if (arg.empty() || arg.find_first_of(" \t") != std::string::npos)
        throw Error(fmt::format("{}: '{}' needs exactly one glob, found '{}'", where, word, arg));
      o.rules.push_back(
          {word == "include" ? Rule::Kind::Include : Rule::Kind::Exclude, arg, where});
    } else if (word == "quantize_linear_attn") {
      if (!parse_bool(arg, &o.quantize_linear_attn))
        throw Error(fmt::format("{}: quantize_linear_attn takes true or false, found '{}'", where,
                                arg));
    } else {
      throw Error(fmt::format(
          "{}: unknown directive '{}' (expected include GLOB, exclude GLOB or "
          "quantize_linear_attn true|false)",
          where, word));
    }
  }
  return o;
}

PlanOptions parse_json(const std::string& text, const std::string& label) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(fmt::format("{}: not valid JSON: {}", label, e.what()));
  }
  if (!j.is_object()) throw Error(fmt::format("{}: a JSON recipe must be an object", label));
  PlanOptions o;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "rules") {
      if (!it->is_array()) throw Error(fmt::format("{}: \"rules\" must be a list", label));
      for (size_t i = 0; i < it->size(); ++i) {
        const auto& r = (*it)[i];
        const std::string where = fmt::format("{}:rules[{}]", label, i);
        if (!r.is_object() || r.size() != 1)
          throw Error(fmt::format("{}: each rule is {{\"include\": GLOB}} or {{\"exclude\": GLOB}}",
                                  where));
        const std::string kind = r.begin().key();
        if ((kind != "include" && kind != "exclude") || !r.begin()->is_string() ||
            r.begin()->get<std::string>().empty())
          throw Error(fmt::format("{}: each rule is {{\"include\": GLOB}} or {{\"exclude\": GLOB}}",
                                  where));
        o.rules.push_back({kind == "include" ? Rule::Kind::Include : Rule::Kind::Exclude,
                           r.begin()->get<std::string>(), where});
      }
    } else if (it.key() == "quantize_linear_attn") {
      if (!it->is_boolean())
        throw Error(fmt::format("{}: \"quantize_linear_attn\" must be true or false", label));
      o.quantize_linear_attn = it->get<bool>();
    } else {
      throw Error(fmt::format("{}: unknown key \"{}\" (expected \"rules\", "
                              "\"quantize_linear_attn\")",
                              label, it.key()));
    }
  }
  return o;
}

}  // namespace

PlanOptions parse_recipe(const std::string& text, const std::string& label) {
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '{') return parse_json(text, label);
  return parse_text(text, label);
}

PlanOptions load_recipe(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot read recipe file", path.string()));
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_recipe(ss.str(), path.string());
}

void apply_recipe(PlanOptions& options, const PlanOptions& recipe) {
  options.rules.insert(options.rules.end(), recipe.rules.begin(), recipe.rules.end());
  options.quantize_linear_attn = options.quantize_linear_attn || recipe.quantize_linear_attn;
}

}  // namespace fp4kit
