#include "fp4kit/cli/progress.hpp"

#include <fmt/core.h>
#include <unistd.h>

#include <cstdio>

namespace fp4kit::cli {

Progress::Progress(uint64_t total_bytes)
    : tty_(isatty(fileno(stderr)) != 0), total_bytes_(total_bytes),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

void Progress::update(size_t done, size_t total, uint64_t item_bytes, const std::string& label,
                      const std::string& detail) {
  done_bytes_ += item_bytes;
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = elapsed > 0 ? done_bytes_ / elapsed : 0;  // bytes/s
  if (!tty_) {
    fmt::print(stderr, "[{}/{}] {} {}\n", done, total, label, detail);
    return;
  }
  if (done != total && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  const double frac = total_bytes_ ? static_cast<double>(done_bytes_) / total_bytes_ : 1.0;
  const int width = 30;
  const int filled = static_cast<int>(frac * width);
  const double eta = rate > 0 ? (total_bytes_ - done_bytes_) / rate : 0;
  fmt::print(stderr, "\r[{}{}] {}/{} tensors  {:.2f}/{:.2f} GB  {:.0f} MB/s  ETA {:.0f}s   ",
             std::string(filled, '#'), std::string(width - filled, '.'), done, total,
             done_bytes_ / 1e9, total_bytes_ / 1e9, rate / 1e6, eta);
}

void Progress::finish() {
  if (tty_) fmt::print(stderr, "\n");
}

}  // namespace fp4kit::cli
