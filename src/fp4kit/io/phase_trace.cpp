#include "fp4kit/io/phase_trace.hpp"

#include <fmt/core.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace fp4kit {

namespace {
using Clock = std::chrono::steady_clock;
const Clock::time_point g_start = Clock::now();  // static initialisation: process start-up
std::atomic<int64_t> g_totals[static_cast<int>(TraceTotal::Count)];

bool read_enabled() {
  const char* v = std::getenv("FP4KIT_TIMINGS");
  return v && *v && std::strcmp(v, "0") != 0;
}
}  // namespace

bool timings_enabled() {
  static const bool on = read_enabled();
  return on;
}

void trace_phase(const char* phase) {
  if (!timings_enabled()) return;
  const double s = std::chrono::duration<double>(Clock::now() - g_start).count();
  fmt::print(stderr, "fp4kit: timing: +{:.3f} s {}\n", s, phase);
}

void trace_add(TraceTotal what, Clock::duration d) {
  g_totals[static_cast<int>(what)] +=
      std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
}

void trace_totals() {
  if (!timings_enabled()) return;
  static const char* names[] = {"writer threads copying into the output",
                                "waiting for the disk (bounded dirty data)",
                                "stream waiting for room in the writer queue"};
  for (int i = 0; i < static_cast<int>(TraceTotal::Count); ++i)
    fmt::print(stderr, "fp4kit: timing: total {:.3f} s {}\n", g_totals[i].load() * 1e-9,
               names[i]);
}

}  // namespace fp4kit
