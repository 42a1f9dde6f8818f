#pragma once
// The Unicode services the tokenizer needs, backed by ICU: normalization forms (PCRE2 has none),
// lowercasing, and the character classes Hugging Face `tokenizers` takes from Rust's char
// methods (is_whitespace = White_Space, is_alphanumeric = Alphabetic or Numeric).
#include <string>
#include <string_view>

namespace fp4kit::text {

enum class NormalForm { NFC, NFD, NFKC, NFKD };

// Returns `s` (valid UTF-8) in the given normal form, as Unicode 9.0 defines it (the version
// Hugging Face `tokenizers` uses; characters assigned later pass through unchanged).
std::string normalize_unicode(std::string_view s, NormalForm form);

// Full Unicode lowercase mapping (root locale), as Rust's str::to_lowercase.
std::string to_lower_unicode(std::string_view s);

bool is_whitespace(char32_t cp);
bool is_alphanumeric(char32_t cp);
// Rust char::is_numeric: general categories Nd, Nl, No.
bool is_numeric(char32_t cp);

}  // namespace fp4kit::text
