#pragma once
// GGUF v3 files (llama.cpp's single-file format): a header with key/value metadata and a table of
// tensors (name, dims innermost first, ggml type, offset), then the tensor data, each tensor
// aligned. The whole table is known before any data is written, so every tensor has a fixed
// offset and its bytes can arrive in any order and in pieces (experts of one stacked tensor, one
// by one), from several threads: the writer checks at the end that every byte was written once.
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <span>
#include <string>
#include <vector>

namespace fp4kit {

// ggml types fp4kit writes (values from ggml.h).
enum class GgmlType : uint32_t { F32 = 0, F16 = 1, BF16 = 30, NVFP4 = 40 };
std::string_view ggml_type_name(GgmlType t);
// Bytes of a row of `ne0` elements; throws when ne0 is not a multiple of the type's block.
uint64_t ggml_row_bytes(GgmlType t, uint64_t ne0);
inline constexpr uint64_t kGgmlNvfp4Block = 64;  // elements per block_nvfp4
inline constexpr uint64_t kGgmlNvfp4BlockBytes = 36;

// Metadata in insertion order (GGUF keeps it). Keys must be unique.
class GgufMetadata {
 public:
  void add_u32(const std::string& key, uint32_t v);
  void add_i32(const std::string& key, int32_t v);
  void add_f32(const std::string& key, float v);
  void add_bool(const std::string& key, bool v);
  void add_string(const std::string& key, const std::string& v);
  void add_strings(const std::string& key, const std::vector<std::string>& v);
  void add_i32s(const std::string& key, const std::vector<int32_t>& v);
  void add_f32s(const std::string& key, const std::vector<float>& v);
  void add_bools(const std::string& key, const std::vector<bool>& v);
  bool has(const std::string& key) const;
  size_t count() const { return count_; }
  const std::string& bytes() const { return bytes_; }

 private:
  void key(const std::string& k, uint32_t type);
  std::string bytes_;
  std::vector<std::string> keys_;
  size_t count_ = 0;
};

struct GgufTensor {
  std::string name;
  std::vector<uint64_t> ne;  // ne[0] = row length (innermost), as ggml counts dims
  GgmlType type = GgmlType::F32;
  uint64_t nbytes() const;
};

class GgufFileWriter {
 public:
  // Creates `path` (truncating it) and writes the header. Throws fp4kit::Error naming the file
  // or the tensor (duplicate names, a row length that is not a multiple of the type's block).
  GgufFileWriter(const std::filesystem::path& path, const GgufMetadata& meta,
                 std::vector<GgufTensor> tensors, uint64_t alignment = 32);
  ~GgufFileWriter();
  GgufFileWriter(const GgufFileWriter&) = delete;
  GgufFileWriter& operator=(const GgufFileWriter&) = delete;

  size_t index_of(const std::string& name) const;  // throws naming the tensor
  const GgufTensor& tensor(size_t i) const { return tensors_[i]; }
  // Writes `bytes` at `offset` inside tensor i. Thread-safe. Throws on a range outside the
  // tensor or a range written before.
  void write(size_t tensor, uint64_t offset, std::span<const uint8_t> bytes);
  // Checks every tensor is complete, fsyncs and closes. Throws naming the first incomplete one.
  void finish();
  uint64_t file_bytes() const { return data_start_ + data_bytes_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  std::vector<GgufTensor> tensors_;
  std::vector<uint64_t> offsets_;  // relative to the data section
  std::vector<uint64_t> written_;  // bytes written per tensor
  std::vector<std::vector<std::pair<uint64_t, uint64_t>>> ranges_;  // written [begin, end)
  uint64_t data_start_ = 0, data_bytes_ = 0;
  std::atomic<uint64_t> unkicked_{0};  // bytes written since writeback was last started
  std::mutex mu_;
};

// A GGUF file's header as a loader reads it (gguf.h): metadata values (scalars and strings kept,
// arrays as their element type and length, string arrays' length only), tensor infos and where
// the data section starts. Throws fp4kit::Error naming the file and what is malformed.
struct GgufValue {
  uint32_t type = 0;       // gguf value type (4 = u32, 8 = string, 9 = array, ...)
  uint32_t elem_type = 0;  // arrays
  uint64_t count = 0;      // arrays
  double number = 0;       // numeric scalars and bools
  std::string text;        // strings
};
struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> ne;
  uint32_t type = 0;    // ggml type id (any, not only the GgmlType fp4kit writes)
  uint64_t offset = 0;  // relative to data_start
};
struct GgufHeader {
  uint32_t version = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata;
  std::vector<GgufTensorInfo> tensors;
  uint64_t alignment = 32;
  uint64_t data_start = 0;
  uint64_t file_size = 0;
  const GgufValue* find(const std::string& key) const;
};
GgufHeader read_gguf_header(const std::filesystem::path& path);

}  // namespace fp4kit
