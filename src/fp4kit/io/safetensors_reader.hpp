#pragma once
// Memory-mapped, validated safetensors files. Nothing is loaded whole: tensor bytes are views into
// the mapping, and release() hands their pages back to the kernel.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fp4kit/numeric/dtype.hpp"

namespace fp4kit {

struct TensorInfo {
  std::string name;
  DType dtype = DType::U8;
  std::vector<uint64_t> shape;
  uint64_t begin = 0;  // byte offsets inside the data area (after the header)
  uint64_t end = 0;

  uint64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

// The parsed, validated header of one file. `label` names the file in error messages.
struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // sorted by begin offset
  std::map<std::string, std::string> metadata;
};
// Validates everything the format allows to go wrong (see issue 3): offsets, sizes, overflow,
// duplicates, gaps, overlaps. Throws fp4kit::Error naming `label` and the tensor.
SafetensorsHeader parse_safetensors_header(std::string_view json, uint64_t data_size,
                                           std::string_view label);

// The safetensors library refuses headers above 100 MB (MAX_HEADER_SIZE); so do we.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;
// Checks the 8-byte little-endian header length of a whole file image (length within the file,
// at most kMaxSafetensorsHeaderBytes), then parses the header against the data area that
// follows. `data_offset` receives where the data area starts (8 + header length). Pure: no I/O,
// so the fuzzer drives it directly.
SafetensorsHeader parse_safetensors_image(std::span<const uint8_t> image, std::string_view label,
                                          uint64_t* data_offset);

class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const TensorInfo* find(std::string_view name) const;
  std::span<const uint8_t> bytes(const TensorInfo& t) const;
  // Advises the kernel that the tensor's pages are no longer needed (bounded RSS when streaming).
  void release(const TensorInfo& t) const;
  // Asks the kernel to start reading the tensor's pages now (read-ahead before a sequential use).
  void prefetch(const TensorInfo& t) const;

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  SafetensorsHeader header_;
  std::map<std::string, size_t, std::less<>> by_name_;
  const uint8_t* map_ = nullptr;
  size_t map_size_ = 0;
  uint64_t data_offset_ = 0;
};

}  // namespace fp4kit
