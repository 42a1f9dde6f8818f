#pragma once
// Hand-assembled safetensors bytes for tests, built from the format's definition (8-byte
// little-endian header length, JSON header, data area) without using fp4kit's writer, so that
// reader tests do not trust the code they test.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

namespace fp4kit::testing {

inline std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

// A file image: length prefix + header (as given, no padding added) + data.
inline std::string safetensors_image(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

inline void write_file(const std::filesystem::path& p, const std::string& bytes) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace fp4kit::testing
