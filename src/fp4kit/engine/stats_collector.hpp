#pragma once
// Accumulates calibration statistics from the forward pass: per linear the input amax, the
// per-channel sum of x^2 and the token count; per routed expert the routed-token count.
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "fp4kit/engine/forward.hpp"
#include "fp4kit/io/stats_file.hpp"

namespace fp4kit::engine {

class StatsCollector : public ActivationObserver {
 public:
  void linear_input(const std::vector<const std::string*>& modules, const float* x, size_t rows,
                    size_t k) override;
  void routed(const std::string& expert_prefix, int64_t tokens) override;
  // Statistics reduced elsewhere (the GPU backend): `rows` rows entering `module` whose largest
  // |x| is `amax` and whose per-channel sums of x^2 are `sq`; accumulated as linear_input does.
  void add_reduced(const std::string& module, float amax, const std::vector<double>& sq,
                   int64_t rows);

  // Statistics so far (metadata left for the caller to fill).
  ActivationStats result() const;

 private:
  struct Acc {
    float amax = 0.0f;
    std::vector<double> sq;
    int64_t count = 0;
  };
  std::map<std::string, Acc> acc_;
  std::map<std::string, int64_t> routed_;
};

}  // namespace fp4kit::engine
