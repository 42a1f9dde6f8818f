#include "fp4kit/engine/stats_collector.hpp"

#include <algorithm>
#include <cmath>

#include "fp4kit/error.hpp"
#include "fp4kit/numeric/parallel.hpp"

namespace fp4kit::engine {

void StatsCollector::linear_input(const std::vector<const std::string*>& modules, const float* x,
                                  size_t rows, size_t k) {
  if (modules.empty()) return;
  // Column-wise over all rows: each task owns a range of channels, so sums are added in row
  // order whatever the thread count (same bytes for any --threads).
  std::vector<double> sq(k, 0.0);
  std::vector<float> colmax(k, 0.0f);
  bool bad = false;
  parallel_for(0, k, 16, [&](size_t c0, size_t c1) {
    for (size_t r = 0; r < rows; ++r) {
      const float* xr = x + r * k;
      for (size_t c = c0; c < c1; ++c) {
        const float v = xr[c];
        if (!std::isfinite(v)) bad = true;
        colmax[c] = std::max(colmax[c], std::fabs(v));
        sq[c] += static_cast<double>(v) * v;
      }
    }
  });
  if (bad)
    throw Error("calibration: non-finite activation entering " + *modules.front() +
                " (the model produced NaN/Inf on this data)");
  const float amax = *std::max_element(colmax.begin(), colmax.end());
  for (const std::string* m : modules) {
    Acc& a = acc_[*m];
    if (a.sq.empty()) a.sq.assign(k, 0.0);
    if (a.sq.size() != k) throw Error("calibration: input width of " + *m + " changed");
    a.amax = std::max(a.amax, amax);
    for (size_t c = 0; c < k; ++c) a.sq[c] += sq[c];
    a.count += static_cast<int64_t>(rows);
  }
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
