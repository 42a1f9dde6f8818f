// Config-level rules: spec sections 5 and 6, and the loader behaviour of
// docs/research/loaders-and-formats.md 2.2 (vLLM ModelOpt), 2.3 (SGLang) and 3.4/3.5 (CT).
#include "fp4kit/verify/quant_config.hpp"

#include <fmt/core.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <optional>
#include <fstream>
#include <set>
#include <sstream>

#include "fp4kit/error.hpp"
#include "fp4kit/io/json_strict.hpp"

namespace fp4kit::verify {
namespace {

using nlohmann::json;

std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string str_or(const json& j, const char* key, std::string fallback = "") {
  if (j.is_object() && j.contains(key) && j[key].is_string()) return j[key].get<std::string>();
  return fallback;
}

std::vector<std::string> string_list(const json& j, const std::string& what, Findings& out) {
  std::vector<std::string> v;
  if (j.is_null()) return v;
  if (!j.is_array()) {
    out.error("config.format", "", fmt::format("{} must be a list of module names", what));
    return v;
  }
  for (const auto& e : j) {
    if (e.is_string()) v.push_back(e.get<std::string>());
    else out.error("config.format", "", fmt::format("{} holds a non-string entry {}", what, e.dump()));
  }
  return v;
}

// Finds config.json's quantization_config as vLLM's get_quant_config does. One that is there
// but not an object is malformed, not missing.
const json* flat_config(const json& config, std::string& where, Findings& out) {
  for (const auto& [outer, key] : {std::pair<const char*, const char*>{"", "quantization_config"},
                                   {"text_config", "quantization_config"},
                                   {"", "compression_config"}}) {
    const json* parent = &config;
    if (*outer) {
      const auto t = config.find(outer);
      if (t == config.end() || !t->is_object()) continue;
      parent = &*t;
    }
    const auto q = parent->find(key);
    if (q != parent->end() && !q->is_null() && !q->is_object())
      out.error("config.format", "",
                fmt::format("config.json {}{}{} is malformed ({}, expected an object)", outer,
                            *outer ? "." : "", key, json_kind(*q)));
  }
  if (config.contains("quantization_config") && config["quantization_config"].is_object()) {
    where = "config.json quantization_config";
    return &config["quantization_config"];
  }
  if (config.contains("text_config") && config["text_config"].is_object() &&
      config["text_config"].contains("quantization_config") &&
      config["text_config"]["quantization_config"].is_object()) {
    where = "config.json text_config.quantization_config";
    return &config["text_config"]["quantization_config"];
  }
  if (config.contains("compression_config") && config["compression_config"].is_object()) {
    where = "config.json compression_config";
    return &config["compression_config"];
  }
  return nullptr;
}

std::optional<json> read_hf_quant_config(const std::filesystem::path& dir, Findings& out) {
  const auto path = dir / "hf_quant_config.json";
  if (!std::filesystem::is_regular_file(path)) return std::nullopt;
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return parse_json_strict(ss.str(), path.string());
  } catch (const Error& e) {
    out.error("config.format", "", fmt::format("hf_quant_config.json is not valid JSON: {}", e.what()));
    return std::nullopt;
  }
}

// "group_size" of every config group's weights (ModelOpt flat form).
void check_group_sizes(const json& groups, const std::string& where, Findings& out) {
  if (!groups.is_object()) return;
  for (auto it = groups.begin(); it != groups.end(); ++it) {
    const json& w = it.value().value("weights", json());
    if (w.is_object() && w.contains("group_size") && w["group_size"] != 16)
      out.error("config.format", "",
                fmt::format("{}.config_groups.{}.weights.group_size is {}, NVFP4 needs 16", where,
                            it.key(), w["group_size"].dump()));
  }
}

bool groups_have_activations(const json& groups) {
  if (!groups.is_object()) return false;
  for (auto it = groups.begin(); it != groups.end(); ++it)
    if (it.value().is_object() && it.value().contains("input_activations") &&
        !it.value()["input_activations"].is_null())
      return true;
  return false;
}

std::string describe_diff(const std::set<std::string>& a, const std::set<std::string>& b) {
  std::vector<std::string> only_a, only_b;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(only_a));
  std::set_difference(b.begin(), b.end(), a.begin(), a.end(), std::back_inserter(only_b));
  auto head = [](std::vector<std::string> v) {
    if (v.size() > 5) { v.resize(5); v.push_back("..."); }
    return fmt::format("[{}]", fmt::join(v, ", "));
  };
  return fmt::format("only in hf_quant_config.json: {}; only in config.json: {}", head(only_a),
                     head(only_b));
}

// kv cache declarations in both files: "FP8" <-> {"type":"float","num_bits":8}; null <-> absent.
std::string kv_from_flat(const json& flat) {
  if (!flat.contains("kv_cache_scheme") || flat["kv_cache_scheme"].is_null()) return "";
  const json& s = flat["kv_cache_scheme"];
  if (s.is_object() && s.value("type", "") == "float" && s.value("num_bits", 0) == 8) return "FP8";
  return s.dump();
}

void read_modelopt(const json* flat, const std::string& flat_where, const std::optional<json>& nested,
                   DeclaredQuant& d, Findings& out) {
  std::string flat_algo, nested_algo;
  if (flat) {
    flat_algo = upper(str_or(*flat, "quant_algo"));
    if (str_or(*flat, "quant_method") != "modelopt")
      out.error("config.format", "", fmt::format("{}.quant_method is '{}', expected 'modelopt'",
                                                 flat_where, str_or(*flat, "quant_method")));
    if (flat->contains("group_size") && (*flat)["group_size"] != 16)
      out.error("config.format", "", fmt::format("{}.group_size is {}, NVFP4 needs 16", flat_where,
                                                 (*flat)["group_size"].dump()));
    check_group_sizes(flat->value("config_groups", json()), flat_where, out);
  } else {
    out.warning("config.files", "",
                "config.json has no quantization_config: recent vLLM and SGLang read it first; "
                "only hf_quant_config.json declares the quantization");
  }
  if (nested) {
    const json& q = nested->value("quantization", json());
    if (!q.is_object()) {
      out.error("config.hf_quant_keys", "",
                "hf_quant_config.json has no \"quantization\" object (vLLM reads quant_algo, "
                "kv_cache_quant_algo, group_size and exclude_modules from it)");
    } else {
      std::vector<std::string> missing;
      for (const char* k : {"quant_algo", "kv_cache_quant_algo", "group_size", "exclude_modules"})
        if (!q.contains(k)) missing.push_back(k);
      if (!missing.empty())
        out.error("config.hf_quant_keys", "",
                  fmt::format("hf_quant_config.json quantization lacks {}: vLLM raises \"NVFP4 "
                              "quantization requires the following fields\" (null is allowed, "
                              "absence is not)",
                              fmt::join(missing, ", ")));
      nested_algo = upper(str_or(q, "quant_algo"));
      if (q.contains("group_size") && !q["group_size"].is_null() && q["group_size"] != 16)
        out.error("config.format", "", fmt::format("hf_quant_config.json group_size is {}, NVFP4 "
                                                   "needs 16", q["group_size"].dump()));
    }
  } else {
    out.warning("config.files", "",
                "no hf_quant_config.json: ModelOpt writes it and older vLLM/TensorRT-LLM read it");
  }

  d.quant_algo = flat ? flat_algo : nested_algo;
  if (d.quant_algo != "NVFP4" && d.quant_algo != "W4A16_NVFP4") {
    out.error("config.format", "",
              fmt::format("quant_algo is '{}': fp4kit verify checks NVFP4 and W4A16_NVFP4 only",
                          d.quant_algo));
  }
  d.weights_only = d.quant_algo == "W4A16_NVFP4";

  // The two files must say the same thing (spec 9.8).
  if (flat && nested && nested->value("quantization", json()).is_object()) {
    const json& q = (*nested)["quantization"];
    if (!nested_algo.empty() && nested_algo != flat_algo)
      out.error("config.agree", "",
                fmt::format("quant_algo differs: hf_quant_config.json says '{}', {} says '{}'",
                            nested_algo, flat_where, flat_algo));
    auto nested_ex = string_list(q.value("exclude_modules", json()), "exclude_modules", out);
    auto flat_ex = string_list(flat->value("ignore", json()), flat_where + ".ignore", out);
    std::set<std::string> a(nested_ex.begin(), nested_ex.end()), b(flat_ex.begin(), flat_ex.end());
    if (a != b)
      out.error("config.agree", "",
                fmt::format("exclude lists differ between hf_quant_config.json exclude_modules and "
                            "{}.ignore ({}): vLLM reads the second, TensorRT-LLM the first",
                            flat_where, describe_diff(a, b)));
    const std::string nested_kv =
        q.contains("kv_cache_quant_algo") && q["kv_cache_quant_algo"].is_string()
            ? upper(q["kv_cache_quant_algo"].get<std::string>()) : "";
    const std::string flat_kv = kv_from_flat(*flat);
    if (nested_kv != flat_kv)
      out.error("config.agree", "",
                fmt::format("KV cache quantization differs: hf_quant_config.json says '{}', {} "
                            "says '{}'", nested_kv.empty() ? "none" : nested_kv, flat_where,
                            flat_kv.empty() ? "none" : flat_kv));
  }
  if (flat) {
    const bool acts = groups_have_activations(flat->value("config_groups", json()));
    if (flat->contains("config_groups") && acts == d.weights_only)
      out.warning("config.agree", "",
                  fmt::format("{} has quant_algo '{}' but its config_groups {} input_activations",
                              flat_where, d.quant_algo, acts ? "declare" : "do not declare"));
  }

  std::vector<std::string> ex;
  if (flat && flat->contains("ignore")) {
    ex = string_list((*flat)["ignore"], flat_where + ".ignore", out);
    d.exclusions_origin = flat_where + ".ignore";
  } else if (nested && nested->value("quantization", json()).is_object()) {
    ex = string_list((*nested)["quantization"].value("exclude_modules", json()), "exclude_modules", out);
    d.exclusions_origin = "hf_quant_config.json exclude_modules";
  }
  d.exclusions = ExclusionList(std::move(ex), ExclusionStyle::ModelOpt);
}

void check_ct_args(const json& a, const std::string& where, bool activations, Findings& out) {
  auto expect = [&](const char* key, const json& want, bool error) {
    if (!a.contains(key) || a[key] != want) {
      const std::string got = a.contains(key) ? a[key].dump() : "absent";
      const std::string msg = fmt::format("{}.{} is {}, nvfp4-pack-quantized needs {}", where, key,
                                          got, want.dump());
      if (error) out.error("config.format", "", msg);
      else out.warning("config.format", "", msg);
    }
  };
  expect("num_bits", 4, true);
  expect("type", "float", true);
  expect("strategy", "tensor_group", true);
  expect("group_size", 16, true);
  expect("symmetric", true, false);
  if (activations) expect("dynamic", "local", false);
  else expect("dynamic", false, false);
  for (const char* k : {"scale_dtype", "zp_dtype"})
    if (a.contains(k))
      out.warning("config.ct_compat", "",
                  fmt::format("{}.{} is present: compressed-tensors before 0.13 (pinned by many vLLM "
                              "builds) rejects unknown keys (\"Extra inputs are not permitted\")",
                              where, k));
}

void read_compressed_tensors(const json& flat, const std::string& where, bool has_nested,
                             DeclaredQuant& d, Findings& out) {
  const std::string format = str_or(flat, "format");
  const json& groups = flat.value("config_groups", json());
  if (!groups.is_object() || groups.empty()) {
    out.error("config.format", "", fmt::format("{} has no config_groups", where));
  }
  if (str_or(flat, "quantization_status") != "compressed")
    out.warning("config.format", "",
                fmt::format("{}.quantization_status is '{}', expected 'compressed'", where,
                            str_or(flat, "quantization_status")));
  bool any_acts = false, any_no_acts = false;
  if (groups.is_object()) {
    for (auto it = groups.begin(); it != groups.end(); ++it) {
      const std::string gw = fmt::format("{}.config_groups.{}", where, it.key());
      const json& g = it.value();
      const std::string gformat = str_or(g, "format", format);
      if (gformat != "nvfp4-pack-quantized")
        out.error("config.format", "", fmt::format("{} format is '{}', expected "
                                                   "'nvfp4-pack-quantized'", gw, gformat));
      if (g.contains("weights") && g["weights"].is_object())
        check_ct_args(g["weights"], gw + ".weights", false, out);
      else
        out.error("config.format", "", fmt::format("{} has no weights", gw));
      const json& acts = g.value("input_activations", json());
      if (acts.is_object()) {
        any_acts = true;
        check_ct_args(acts, gw + ".input_activations", true, out);
      } else {
        any_no_acts = true;
      }
      for (const auto& t : string_list(g.value("targets", json()), gw + ".targets", out))
        d.targets.push_back(t);
    }
  }
  if (any_acts && any_no_acts)
    out.warning("config.format", "",
                "config groups mix NVFP4 (W4A4) and NVFP4A16; verify checks activation scales as W4A4");
  d.target_matcher = ExclusionList(d.targets, ExclusionStyle::CompressedTensors);
  d.weights_only = !any_acts;
  d.quant_algo = d.weights_only ? "NVFP4A16" : "NVFP4";
  if (has_nested)
    out.info("config.files", "",
             "hf_quant_config.json is present in a compressed-tensors checkpoint; loaders ignore it "
             "when config.json has a quantization_config");
  d.exclusions = ExclusionList(string_list(flat.value("ignore", json()), where + ".ignore", out),
                               ExclusionStyle::CompressedTensors);
  d.exclusions_origin = where + ".ignore";
}

}  // namespace

std::string_view format_name(QuantFormat f) {
  switch (f) {
    case QuantFormat::ModelOpt: return "modelopt";
    case QuantFormat::CompressedTensors: return "compressed-tensors";
    case QuantFormat::None: return "";
  }
  return "";
}

bool DeclaredQuant::targets_module(std::string_view module) const {
  if (format != QuantFormat::CompressedTensors) return true;
  for (size_t i = 0; i < targets.size(); ++i) {
    const std::string& t = targets[i];
    if (t.rfind("re:", 0) == 0) {
      if (target_matcher.pattern_matches(i, module)) return true;
    } else if (t == module) {
      return true;
    } else if (t.find('.') == std::string::npos) {
      return true;  // a class name ("Linear", "QKVParallelLinear", ...): every linear layer
    }
  }
  return false;
}

DeclaredQuant read_declared_quant(const json& config, const std::filesystem::path& dir,
                                  Findings& out) {
  DeclaredQuant d;
  std::string where;
  const size_t findings_before = out.list.size();
  const json* flat = flat_config(config, where, out);
  const bool malformed = out.list.size() > findings_before;
  const auto nested = read_hf_quant_config(dir, out);
  const std::string method = flat ? str_or(*flat, "quant_method") : "";
  if (flat && method == "compressed-tensors") {
    d.format = QuantFormat::CompressedTensors;
    read_compressed_tensors(*flat, where, nested.has_value(), d, out);
  } else if ((flat && method.rfind("modelopt", 0) == 0) || (!flat && nested)) {
    d.format = QuantFormat::ModelOpt;
    read_modelopt(flat, where, nested, d, out);
  } else if (flat) {
    out.error("config.missing", "",
              fmt::format("{}.quant_method is '{}': not an NVFP4 checkpoint (expected 'modelopt' or "
                          "'compressed-tensors')", where, method));
  } else if (!malformed) {
    out.error("config.missing", "",
              "neither config.json quantization_config nor hf_quant_config.json is present: "
              "loaders treat every tensor as unquantized");
  }
  return d;
}

}  // namespace fp4kit::verify
