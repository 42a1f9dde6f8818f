#pragma once
// Wall-clock time per phase of the forward, printed to stderr after each Engine::run when the
// environment variable FP4KIT_ENGINE_PROFILE is set (to see where the time goes on a machine
// without a profiler). Phases add up across calls and threads (per-task phases sum thread time).
#include <chrono>

namespace fp4kit::engine::profile {

bool enabled();
void add(const char* phase, double seconds);
void print_and_reset();  // stderr, one line per phase
// A device backend's "wait for queued work" (cudaDeviceSynchronize), called at the start and end
// of every Scope while profiling, so a phase's time is its device time too (profiling only: it
// serialises host and device).
void set_device_sync(void (*sync)());
void device_sync();

// Adds the lifetime of the object to `phase` when profiling is on.
class Scope {
 public:
  explicit Scope(const char* phase) : phase_(enabled() ? phase : nullptr) {
    if (phase_) {
      device_sync();
      t0_ = std::chrono::steady_clock::now();
    }
  }
  ~Scope() {
    if (phase_) device_sync();
    if (phase_)
      add(phase_, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count());
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  const char* phase_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace fp4kit::engine::profile
