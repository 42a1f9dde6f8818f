#pragma once
// The "normalizer" of a tokenizer.json: a list of string rewrites applied to each stretch of
// input text between added tokens, before pre-tokenization (Hugging Face semantics).
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace fp4kit::text {

class Regex;

class Normalizer {
 public:
  // Parses the "normalizer" value (null means none). `file` names tokenizer.json for errors;
  // unknown types throw fp4kit::Error naming the file and the component.
  static Normalizer parse(const nlohmann::json& j, const std::string& file);

  Normalizer();
  ~Normalizer();
  Normalizer(Normalizer&&) noexcept;
  Normalizer& operator=(Normalizer&&) noexcept;

  // at_start / at_end: whether `s` begins / ends the stretch being normalized. A long document
  // encoded in parts (text/piece_encoder.hpp) passes false where a part continues the stretch:
  // Prepend and left Strip act only at its start, Append and right Strip only at its end.
  std::string apply(std::string_view s, bool at_start = true, bool at_end = true) const;
  bool empty() const { return steps_.empty(); }

 private:
  enum class Kind { NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Append, ReplaceString, ReplaceRegex, Strip };
  struct Step {
    Kind kind;
    std::string a{};  // prepend/append text, replace pattern
    std::string b{};  // replace content
    bool left = false, right = false;  // Strip
    std::shared_ptr<Regex> regex{};
  };
  void add(const nlohmann::json& j, const std::string& file);
  std::vector<Step> steps_;
};

// Replaces every non-overlapping occurrence of `from` (non-empty) in `s` by `to`.
std::string replace_all(std::string_view s, std::string_view from, std::string_view to);

// Removes Unicode whitespace at the ends (Rust's trim_start / trim_end).
std::string_view strip_whitespace(std::string_view s, bool left, bool right);

}  // namespace fp4kit::text
