#pragma once
// A compiled PCRE2 pattern in UTF + UCP mode (\p{L}, \s, \w follow Unicode properties), as the
// Hugging Face pre-tokenizer regexes require. `tokenizers` runs them with Oniguruma, so:
//   * \s and \S are rewritten to Oniguruma's meaning, the Unicode White_Space property: PCRE2
//     also counts U+180E MONGOLIAN VOWEL SEPARATOR as space (an old Unicode rule), which changed
//     how " \u180e" splits in Qwen3 (see with_oniguruma_spaces);
//   * matching follows the Oniguruma binding's iteration: non-overlapping, left to right, and an
//     empty match right where the previous match ended is skipped.
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fp4kit::text {

class Regex {
 public:
  // `context` names where the pattern comes from (file and component) for error messages.
  Regex(const std::string& pattern, const std::string& context);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // All matches in `s`, which must be valid UTF-8 (checked by the caller once per input).
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const;

  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*, kept opaque so users need no PCRE2 headers
};

// Rewrites \s / \S (outside and inside character classes; \S inside a class is left alone) to
// an explicit White_Space class.
std::string with_oniguruma_spaces(std::string_view pattern);

// Escapes a literal string for use inside a PCRE2 pattern.
std::string regex_escape(std::string_view literal);

}  // namespace fp4kit::text
