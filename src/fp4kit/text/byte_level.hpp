#pragma once
// GPT-2's reversible byte <-> printable-character map (`bytes_to_unicode`), used by byte-level
// BPE tokenizers (GPT-2, Llama-3, Qwen2/3): every byte becomes one visible code point so that
// BPE can work on text without control characters or spaces.
#include <cstdint>
#include <string>
#include <string_view>

namespace fp4kit::text {

// The UTF-8 encoding of the character that stands for `byte`.
const std::string& byte_to_unicode(uint8_t byte);

// Maps every byte of `raw` to its character.
std::string bytes_to_byte_level(std::string_view raw);

// The byte a character stands for, or -1 when `cp` is not in the map.
int byte_level_char_to_byte(char32_t cp);

}  // namespace fp4kit::text
