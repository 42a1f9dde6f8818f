#include "fp4kit/text/byte_level.hpp"

#include <array>

#include "fp4kit/text/utf8.hpp"

namespace fp4kit::text {

namespace {

struct ByteTables {
  std::array<std::string, 256> to_char;
  std::array<int, 324> to_byte{};  // code points used are < 256 + 68

  ByteTables() {
    to_byte.fill(-1);
    // Printable Latin-1 bytes stand for themselves; the other 68 bytes take 256, 257, ... in order.
    auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const char32_t cp = printable(b) ? static_cast<char32_t>(b) : static_cast<char32_t>(next++);
      append_utf8(to_char[static_cast<size_t>(b)], cp);
      to_byte[cp] = b;
    }
  }
};

const ByteTables& tables() {
  static const ByteTables t;
  return t;
}

}  // namespace

const std::string& byte_to_unicode(uint8_t byte) { return tables().to_char[byte]; }

std::string bytes_to_byte_level(std::string_view raw) {
  const auto& t = tables();
  std::string out;
  out.reserve(raw.size() * 2);
  for (char c : raw) out += t.to_char[static_cast<unsigned char>(c)];
  return out;
}

int byte_level_char_to_byte(char32_t cp) {
  const auto& t = tables();
  return cp < t.to_byte.size() ? t.to_byte[cp] : -1;
}

}  // namespace fp4kit::text
