#pragma once
// The whole content of a file (empty when it cannot be read).
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace fp4kit::testing {

inline std::string file_bytes(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

}  // namespace fp4kit::testing
