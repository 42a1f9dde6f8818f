#include "fp4kit/io/write_tuning.hpp"

#include <fmt/core.h>

#include <cerrno>
#include <cstdlib>

#include "fp4kit/error.hpp"

namespace fp4kit {

namespace {
uint64_t env_number(const std::function<const char*(const char*)>& env, const char* name,
                    uint64_t fallback, uint64_t lo, uint64_t hi) {
  const char* v = env(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  errno = 0;
  const unsigned long long n = std::strtoull(v, &end, 10);
  if (errno != 0 || *end != '\0' || v[0] < '0' || v[0] > '9' || n < lo || n > hi)
    throw Error(fmt::format("environment variable {}='{}': expected a whole number from {} to {}",
                            name, v, lo, hi));
  return n;
}
}  // namespace

WriteTuning parse_write_tuning(const std::function<const char*(const char*)>& env) {
  WriteTuning t;
  t.writers = static_cast<unsigned>(env_number(env, "FP4KIT_WRITERS", t.writers, 1, 64));
  t.kept_piece_bytes =
      env_number(env, "FP4KIT_KEPT_PIECE_MIB", t.kept_piece_bytes >> 20, 0, 1 << 20) << 20;
  t.writeback_window =
      env_number(env, "FP4KIT_WB_WINDOW_MIB", t.writeback_window >> 20, 1, 1 << 20) << 20;
  t.dirty_lag = env_number(env, "FP4KIT_WB_LAG_MIB", t.dirty_lag >> 20, 0, 1 << 24) << 20;
  return t;
}

const WriteTuning& write_tuning() {
  static const WriteTuning t = parse_write_tuning([](const char* n) { return std::getenv(n); });
  return t;
}

}  // namespace fp4kit
