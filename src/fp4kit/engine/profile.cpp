#include "fp4kit/engine/profile.hpp"

#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

namespace fp4kit::engine::profile {
namespace {
std::mutex g_mu;
std::map<std::string, double>& totals() {
  static std::map<std::string, double> t;
  return t;
}
}  // namespace

bool enabled() {
  static const bool on = std::getenv("FP4KIT_ENGINE_PROFILE") != nullptr;
  return on;
}

namespace {
void (*g_sync)() = nullptr;
}

void set_device_sync(void (*sync)()) { g_sync = sync; }
void device_sync() {
  if (g_sync) g_sync();
}

void add(const char* phase, double seconds) {
  const std::lock_guard<std::mutex> lock(g_mu);
  totals()[phase] += seconds;
}

void print_and_reset() {
  if (!enabled()) return;
  const std::lock_guard<std::mutex> lock(g_mu);
  for (const auto& [phase, s] : totals()) std::fprintf(stderr, "profile: %-36s %9.3f s\n", phase.c_str(), s);
  totals().clear();
}

}  // namespace fp4kit::engine::profile
