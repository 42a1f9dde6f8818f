#pragma once
// Column statistics of a layer kept in backend memory (Backend::defers_column_stats): each
// distinct list of modules sharing an input gets a slot; every input entering it is reduced and
// added there without waiting for the device; flush() brings all slots to the host once (at the
// end of a layer) and hands each to the observer as one linear_column_stats call. The sums are
// added in the same order as one call per input would add them on the host, so the numbers are
// the same bytes.
#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "fp4kit/engine/backend.hpp"
#include "fp4kit/engine/forward.hpp"

namespace fp4kit::engine {

class ColumnStatsSlots {
 public:
  explicit ColumnStatsSlots(Backend& be) : be_(be) {}
  // Sums never flushed (the layer threw) are dropped from the backend.
  ~ColumnStatsSlots();
  ColumnStatsSlots(const ColumnStatsSlots&) = delete;
  ColumnStatsSlots& operator=(const ColumnStatsSlots&) = delete;
  // x [rows, k] (backend memory), the input of every module in `modules`.
  void add(const std::vector<const std::string*>& modules, const float* x, size_t rows, size_t k);
  // Every slot to `obs` (in the order the slots were first added to), then empty. A NaN or Inf
  // in any input is an error naming the first module of the first such input.
  void flush(ActivationObserver& obs);

 private:
  struct Slot {
    std::vector<std::string> modules;
    size_t k = 0, rows = 0;
  };
  Backend& be_;
  std::map<std::string, size_t> index_;  // modules joined by '\n' -> slot
  std::vector<Slot> slots_;
  std::vector<size_t> call_slot_;  // the slot of each add() since the last flush
};

}  // namespace fp4kit::engine
