#include "fp4kit/engine/stats_collector.hpp"

#include <algorithm>
#include <cmath>

#include "fp4kit/engine/cpu/ops.hpp"
#include "fp4kit/error.hpp"

namespace fp4kit::engine {

void StatsCollector::linear_input(const std::vector<const std::string*>& modules, const float* x,
                                  size_t rows, size_t k) {
  if (modules.empty()) return;
  std::vector<double> sq(k, 0.0);
  std::vector<float> colmax(k, 0.0f);
  const bool bad = !column_amax_sumsq(x, rows, k, colmax.data(), sq.data());
  if (bad)
    throw Error("calibration: non-finite activation entering " + *modules.front() +
                " (the model produced NaN/Inf on this data)");
  const float amax = *std::max_element(colmax.begin(), colmax.end());
  for (const std::string* m : modules) add_reduced(*m, amax, sq, static_cast<int64_t>(rows));
}

void StatsCollector::add_reduced(const std::string& module, float amax,
                                 const std::vector<double>& sq, int64_t rows) {
  Acc& a = acc_[module];
  if (a.sq.empty()) a.sq.assign(sq.size(), 0.0);
  if (a.sq.size() != sq.size()) throw Error("calibration: input width of " + module + " changed");
  a.amax = std::max(a.amax, amax);
  for (size_t c = 0; c < sq.size(); ++c) a.sq[c] += sq[c];
  a.count += rows;
}

void StatsCollector::routed(const std::string& expert_prefix, int64_t tokens) {
  routed_[expert_prefix] += tokens;
}

ActivationStats StatsCollector::result() const {
  ActivationStats s;
  for (const auto& [m, a] : acc_) {
    s.input_amax[m] = a.amax;
    s.input_sq_sum[m] = a.sq;
    s.token_count[m] = a.count;
  }
  s.routed_tokens = routed_;
  return s;
}

}  // namespace fp4kit::engine
