#pragma once
// E2M1 codes and block scales chosen before the export stream (quantize --gptq --data: layer by
// layer, by the engine pass, with that layer's X^T X), kept in an unnamed scratch file so that
// memory holds none of them; encode_weight (block_scales.hpp) takes a stored tensor instead of
// encoding it. The file has no name: the system frees it when the store closes, or the process
// ends however it ends.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "fp4kit/quant/block_scales.hpp"

namespace fp4kit {

class CodeStore {
 public:
  // The scratch file goes into `dir` (the output's parent directory: it needs about the output's
  // size). Throws fp4kit::Error naming `dir`.
  explicit CodeStore(const std::filesystem::path& dir);
  ~CodeStore();
  CodeStore(const CodeStore&) = delete;
  CodeStore& operator=(const CodeStore&) = delete;

  void put(const std::string& module, float s2, const std::vector<uint8_t>& packed,
           const std::vector<uint8_t>& scales, const ScaleOutcome& outcome);
  // True, with packed [packed_bytes], scales [scale_bytes] and outcome filled, when `module` was
  // stored. A stored tensor of other sizes or another s2 is an error (internal).
  bool get(const std::string& module, float s2, size_t packed_bytes, size_t scale_bytes,
           uint8_t* packed, uint8_t* scales, ScaleOutcome& outcome) const;
  size_t tensors() const { return items_.size(); }
  uint64_t bytes() const { return end_; }

 private:
  struct Item {
    uint64_t offset = 0;
    size_t packed = 0, scales = 0;
    float s2 = 0;
    ScaleOutcome outcome;
  };
  std::filesystem::path dir_;
  int fd_ = -1;
  uint64_t end_ = 0;
  std::map<std::string, Item> items_;
};

}  // namespace fp4kit
