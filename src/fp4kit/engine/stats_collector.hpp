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
  // Also accumulate, per linear, the 16x16 diagonal blocks of X^T X (calibrate --hessian, for
  // quantize --scales hessian). `act_global_scale` empty: of the inputs as they are (W4A16);
  // else of the inputs after NVFP4 activation quantization with global scale (1/input_scale) of
  // each module, as W4A4 kernels see them (every linear must have one: else an error).
  // full: also all of X^T X [K, K] per linear (quantize --gptq; K^2 doubles per linear).
  void collect_hessian(std::map<std::string, float> act_global_scale, bool full = false);

  void linear_input(const std::vector<const std::string*>& modules, const float* x, size_t rows,
                    size_t k) override;
  void routed(const std::string& expert_prefix, int64_t tokens) override;
  // Column statistics only, unless Hessian blocks are collected (they need the rows).
  bool wants_column_stats() const override { return !hessian_; }
  void linear_column_stats(const std::vector<const std::string*>& modules, const float* colmax,
                           const double* sumsq, size_t rows, size_t k) override;
  // With Hessian blocks: also each BMM expert's own (bmm_expert_stats_name), for --scales hessian.
  bool wants_bmm_expert_rows() const override { return hessian_; }
  void bmm_expert_input(const std::string& module, uint64_t expert, const float* x, size_t rows,
                        size_t k) override;
  bool concurrent() const override { return true; }  // one module's sums stay in call order
  // Statistics reduced elsewhere (the GPU backend): `rows` rows entering `module` whose largest
  // |x| is `amax` and whose per-channel sums of x^2 are `sq`; accumulated as linear_input does.
  void add_reduced(const std::string& module, float amax, const std::vector<double>& sq,
                   int64_t rows);

  // Statistics so far (metadata left for the caller to fill).
  ActivationStats result() const;
  // The same, moved out: the collector starts over empty (quantize --gptq --data takes each
  // layer's statistics when the layer is done, so that memory holds one layer's X^T X).
  ActivationStats take();

 private:
  struct Acc {
    float amax = 0.0f;
    std::vector<double> sq;
    int64_t count = 0;
    std::vector<double> hess;  // [k/16][16][16]
    std::vector<double> xtx;   // [k][k] (full)
  };
  // Into `into` (acc_, or expert_acc_ for BMM experts); the activation global scale of each
  // module is looked up under `gs_module` when given (a BMM expert: its tensor's).
  void add_hessian(const std::vector<const std::string*>& modules, const float* x, size_t rows,
                   size_t k, std::map<std::string, Acc>& into,
                   const std::string* gs_module = nullptr);
  bool hessian_ = false, full_ = false;
  std::map<std::string, float> act_gs_;
  std::map<std::string, Acc> acc_;
  std::map<std::string, Acc> expert_acc_;  // BMM experts: Hessian blocks and token count only
  std::map<std::string, int64_t> routed_;
  // Guards the maps above (column sums are computed outside it); a moved or copied collector
  // gets a mutex of its own.
  struct Mutex {
    std::mutex m;
    Mutex() = default;
    Mutex(const Mutex&) {}
    Mutex& operator=(const Mutex&) { return *this; }
  };
  Mutex mu_;
};

// 1 / input_scale per linear, input_scale = amax / 2688 (quantize's default form): the global
// scales W4A4 kernels quantize each linear's input with (collect_hessian). A routed expert's
// amax is the max over the experts of its layer with the same projection (spec: one input_scale
// per MoE layer and projection), which also covers experts no token reached.
std::map<std::string, float> w4a4_act_global_scales(const ActivationStats& stats);

}  // namespace fp4kit::engine
