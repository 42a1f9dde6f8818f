#pragma once
// UTF-8 helpers for the tokenizer: decoding one code point, encoding, validation, and the
// "lossy" repair Rust's String::from_utf8_lossy performs (Hugging Face decoders use it, so our
// decode must replace broken sequences the same way to give the same text).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace fp4kit::text {

// Decodes the code point starting at s[pos] (which must be valid UTF-8) and advances pos.
char32_t next_code_point(std::string_view s, size_t& pos);

// Appends the UTF-8 encoding of `cp` to `out`.
void append_utf8(std::string& out, char32_t cp);

// Byte length of the (valid) UTF-8 sequence that starts with lead byte `lead`.
inline size_t utf8_sequence_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  return 4;
}

// Offset of the first byte that is not part of a well-formed UTF-8 sequence, or npos.
size_t find_invalid_utf8(std::string_view s);

// Replaces every maximal ill-formed subsequence by U+FFFD, as Rust's from_utf8_lossy does.
std::string utf8_lossy(std::string_view bytes);

}  // namespace fp4kit::text
