#pragma once
// Token string -> id map with lookups by string_view (no temporary strings on the hot path).
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

namespace fp4kit::text {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

}  // namespace fp4kit::text
