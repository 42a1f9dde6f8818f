#include "fp4kit/engine/column_stats_slots.hpp"

#include <cstdint>

#include "fp4kit/engine/profile.hpp"
#include "fp4kit/error.hpp"

namespace fp4kit::engine {

ColumnStatsSlots::~ColumnStatsSlots() {
  if (call_slot_.empty()) return;
  try {
    std::vector<std::vector<float>> colmax;
    std::vector<std::vector<double>> sumsq;
    be_.column_stats_take(colmax, sumsq);
  } catch (...) {  // the backend's own error was already thrown or will be at its next call
  }
}

void ColumnStatsSlots::add(const std::vector<const std::string*>& modules, const float* x,
                           size_t rows, size_t k) {
  if (modules.empty() || k == 0) return;
  std::string key;
  for (const std::string* m : modules) key += *m + '\n';
  auto it = index_.find(key);
  if (it == index_.end()) {
    Slot s;
    for (const std::string* m : modules) s.modules.push_back(*m);
    s.k = k;
    slots_.push_back(std::move(s));
    it = index_.emplace(std::move(key), slots_.size() - 1).first;
  }
  Slot& s = slots_[it->second];
  if (s.k != k) throw Error("calibration: input width of " + s.modules.front() + " changed");
  s.rows += rows;
  call_slot_.push_back(it->second);
  be_.column_stats_add(it->second, call_slot_.size() - 1, x, rows, k);
}

void ColumnStatsSlots::flush(ActivationObserver& obs) {
  if (slots_.empty()) return;
  const profile::Scope ps("stats: column statistics (download)");
  std::vector<std::vector<float>> colmax;
  std::vector<std::vector<double>> sumsq;
  const size_t bad = be_.column_stats_take(colmax, sumsq);
  std::vector<Slot> slots = std::move(slots_);
  const std::vector<size_t> calls = std::move(call_slot_);
  slots_.clear();
  call_slot_.clear();
  index_.clear();
  if (bad != SIZE_MAX)
    throw Error("calibration: non-finite activation entering " +
                slots.at(calls.at(bad)).modules.front() +
                " (the model produced NaN/Inf on this data)");
  for (size_t i = 0; i < slots.size(); ++i) {
    const Slot& s = slots[i];
    if (colmax.size() <= i || colmax[i].size() != s.k || sumsq[i].size() != s.k)
      throw Error("engine: column statistics of " + s.modules.front() + " missing from backend " +
                  be_.name());
    std::vector<const std::string*> mods;
    for (const std::string& m : s.modules) mods.push_back(&m);
    obs.linear_column_stats(mods, colmax[i].data(), sumsq[i].data(), s.rows, s.k);
  }
}

}  // namespace fp4kit::engine
