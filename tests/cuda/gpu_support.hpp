#pragma once
// GPU tests: skipped, visibly, where there is no CUDA device (CI has nvcc but no GPU); they run on
// a GPU machine and their latest output is kept in bench/results/.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "fp4kit/engine/cuda/device.hpp"

#define FP4KIT_REQUIRE_GPU()                                                                  \
  do {                                                                                        \
    std::string why_;                                                                         \
    if (::fp4kit::engine::cuda::device_count(&why_) == 0)                                     \
      GTEST_SKIP() << "SKIPPED: no CUDA device (" << why_                                     \
                   << "); GPU tests run on a GPU machine, latest output in bench/results/";   \
  } while (0)

namespace fp4kit::testing {

inline std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// ||a - b|| / ||b||
inline double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// A device array holding `v`, poisoned beyond it is not needed: outputs are poisoned with NaN
// before each kernel so an unwritten element fails the comparison.
struct Dev {
  engine::cuda::DeviceArray<float> b;
  size_t n = 0;
  explicit Dev(const std::vector<float>& v) : b(v.size()), n(v.size()) {
    engine::cuda::upload(b.data(), v.data(), n * 4, nullptr);
  }
  explicit Dev(size_t count) : b(count), n(count) {
    std::vector<float> nan(count, NAN);
    engine::cuda::upload(b.data(), nan.data(), n * 4, nullptr);
  }
  std::vector<float> get() const {
    engine::cuda::check(cudaDeviceSynchronize(), "synchronize");
    std::vector<float> v(n);
    engine::cuda::download(v.data(), b.data(), n * 4, nullptr);
    return v;
  }
  float* p() const { return b.data(); }
};

}  // namespace fp4kit::testing
