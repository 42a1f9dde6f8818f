#pragma once
// Where the time of a run goes, for benchmarks: with FP4KIT_TIMINGS=1 in the environment,
// trace_phase() prints "fp4kit: timing: +S.SSS s <phase>" to stderr (S from the first use, which
// the CLI makes at start-up), and trace_total() accumulates the seconds threads spent in one kind
// of work (printed by trace_totals()). Without it they cost one branch and print nothing.
#include <chrono>
#include <cstdint>

namespace fp4kit {

bool timings_enabled();
void trace_phase(const char* phase);

enum class TraceTotal : int {
  WriterCopy,      // writer threads copying tensor bytes into the output file (pwrite / memcpy)
  WritebackWait,   // waiting for the disk to catch up (bounded dirty data)
  StreamBlocked,   // the quantize stream waiting for room in the writer's queue
  Count
};
void trace_add(TraceTotal what, std::chrono::steady_clock::duration d);
void trace_totals();

// Adds the time from construction to destruction to `what` (when timings are enabled).
class TraceScope {
 public:
  explicit TraceScope(TraceTotal what)
      : what_(what), on_(timings_enabled()),
        t0_(on_ ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{}) {}
  ~TraceScope() {
    if (on_) trace_add(what_, std::chrono::steady_clock::now() - t0_);
  }
  TraceScope(const TraceScope&) = delete;
  TraceScope& operator=(const TraceScope&) = delete;

 private:
  TraceTotal what_;
  bool on_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace fp4kit
