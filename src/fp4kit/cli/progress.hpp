#pragma once
// Progress of a long run: a one-line bar on a terminal, one line per item otherwise (logs).
#include <chrono>
#include <cstdint>
#include <string>

namespace fp4kit::cli {

class Progress {
 public:
  explicit Progress(uint64_t total_bytes);
  // Called after each item; `label` is the tensor/module name.
  void update(size_t done, size_t total, uint64_t item_bytes, const std::string& label,
              const std::string& detail);
  void finish();

 private:
  bool tty_;
  uint64_t total_bytes_;
  uint64_t done_bytes_ = 0;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace fp4kit::cli
