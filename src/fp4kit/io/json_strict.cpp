#include "fp4kit/io/json_strict.hpp"

#include <fmt/core.h>

#include <string>
#include <vector>

#include "fp4kit/error.hpp"

namespace fp4kit {

namespace {

using nlohmann::json;

// A DOM builder for nlohmann's SAX interface, linear in the input: nlohmann's own callback
// parser scans the parent object at every object end (quadratic in the tensor count of a
// safetensors header). Duplicate keys are found by the object's own map, depth by the stack.
class BoundedDomSax : public nlohmann::json_sax<json> {
 public:
  BoundedDomSax(json& root, std::string_view label, bool reject_duplicates)
      : root_(root), label_(label), reject_duplicates_(reject_duplicates) {}

  bool null() override { return put(json(nullptr)); }
  bool boolean(bool v) override { return put(json(v)); }
  bool number_integer(number_integer_t v) override { return put(json(v)); }
  bool number_unsigned(number_unsigned_t v) override { return put(json(v)); }
  bool number_float(number_float_t v, const string_t&) override { return put(json(v)); }
  bool string(string_t& v) override { return put(json(std::move(v))); }
  bool binary(binary_t& v) override { return put(json::binary(std::move(v))); }

  bool start_object(std::size_t) override { return open(json::object()); }
  bool start_array(std::size_t) override { return open(json::array()); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }

  bool key(string_t& k) override {
    json& obj = *stack_.back();
    auto it = obj.find(k);
    if (it != obj.end()) {
      if (reject_duplicates_)
        throw Error(fmt::format("{}: duplicate name \"{}\" (each name may appear only once)",
                                label_, k));
      obj.erase(it);  // the last of two equal keys wins, as in Python's json
    }
    key_ = std::move(k);
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    throw Error(fmt::format("{}: invalid JSON: {}", label_, e.what()));
  }

 private:
  // Places a value where the parser is: the root, the end of an array, or under the last key.
  json* place(json&& v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    json& parent = *stack_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(v));
      return &parent.back();
    }
    return &(parent[key_] = std::move(v));
  }
  bool put(json&& v) {
    place(std::move(v));
    return true;
  }
  bool open(json&& container) {
    if (static_cast<int>(stack_.size()) >= kMaxJsonDepth)
      throw Error(fmt::format("{}: JSON nested deeper than {} levels", label_, kMaxJsonDepth));
    stack_.push_back(place(std::move(container)));
    return true;
  }
  bool close() {
    stack_.pop_back();
    return true;
  }

  json& root_;
  std::string label_;
  bool reject_duplicates_;
  std::vector<json*> stack_;
  std::string key_;
};

nlohmann::json parse_json(std::string_view text, std::string_view label, bool reject_duplicates) {
  json result;
  BoundedDomSax sax(result, label, reject_duplicates);
  try {
    json::sax_parse(text.begin(), text.end(), &sax, nlohmann::detail::input_format_t::json,
                    /*strict=*/true, /*ignore_comments=*/false);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: invalid JSON: {}", label, e.what()));
  }
  return result;
}

}  // namespace

nlohmann::json parse_json_strict(std::string_view text, std::string_view label) {
  return parse_json(text, label, true);
}

nlohmann::json parse_json_bounded(std::string_view text, std::string_view label) {
  return parse_json(text, label, false);
}

std::string json_kind(const json& v) {
  switch (v.type()) {
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    case json::value_t::string: return "a string";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::null: return "null";
    case json::value_t::binary: return "binary data";
    case json::value_t::discarded: return "nothing";
    default: return "a number";
  }
}

}  // namespace fp4kit
