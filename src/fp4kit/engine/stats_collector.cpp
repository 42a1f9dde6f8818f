#include "fp4kit/engine/stats_collector.hpp"

#include <algorithm>
#include <cmath>
#include <regex>

#include "fp4kit/engine/act_quant.hpp"
#include "fp4kit/engine/cpu/ops.hpp"
#include "fp4kit/io/stats_file.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/numeric/parallel.hpp"
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
  if (hessian_) add_hessian(modules, x, rows, k, acc_);
}

void StatsCollector::bmm_expert_input(const std::string& module, uint64_t expert, const float* x,
                                      size_t rows, size_t k) {
  if (!hessian_) return;
  const std::string name = bmm_expert_stats_name(module, expert);
  add_hessian({&name}, x, rows, k, expert_acc_, &module);
  const std::lock_guard<std::mutex> lock(mu_.m);
  expert_acc_[name].count += static_cast<int64_t>(rows);
}

void StatsCollector::linear_column_stats(const std::vector<const std::string*>& modules,
                                         const float* colmax, const double* sumsq, size_t rows,
                                         size_t k) {
  if (modules.empty() || k == 0) return;
  const float amax = *std::max_element(colmax, colmax + k);
  const std::vector<double> sq(sumsq, sumsq + k);
  for (const std::string* m : modules) add_reduced(*m, amax, sq, static_cast<int64_t>(rows));
}

void StatsCollector::add_reduced(const std::string& module, float amax,
                                 const std::vector<double>& sq, int64_t rows) {
  const std::lock_guard<std::mutex> lock(mu_.m);
  Acc& a = acc_[module];
  if (a.sq.empty()) a.sq.assign(sq.size(), 0.0);
  if (a.sq.size() != sq.size()) throw Error("calibration: input width of " + module + " changed");
  a.amax = std::max(a.amax, amax);
  for (size_t c = 0; c < sq.size(); ++c) a.sq[c] += sq[c];
  a.count += rows;
}


void StatsCollector::collect_hessian(std::map<std::string, float> act_global_scale, bool full) {
  hessian_ = true;
  full_ = full;
  act_gs_ = std::move(act_global_scale);
}

void StatsCollector::add_hessian(const std::vector<const std::string*>& modules, const float* x,
                                 size_t rows, size_t k, std::map<std::string, Acc>& into,
                                 const std::string* gs_module) {
  if (k % 16 != 0) return;  // such a linear stays unquantized
  // Modules sharing this input (q/k/v, gate/up) with the same global scale share one sum.
  std::map<float, std::vector<const std::string*>> by_gs;
  for (const std::string* m : modules) {
    float gs = 0.0f;  // 0: inputs as they are
    if (!act_gs_.empty()) {
      const std::string& key = gs_module ? *gs_module : *m;
      const auto it = act_gs_.find(key);
      if (it == act_gs_.end())
        throw Error("calibration: no activation global scale for " + key +
                    " (the first pass saw no input for it)");
      gs = it->second;
    }
    by_gs[gs].push_back(m);
  }
  std::vector<float> xq;
  for (const auto& [gs, mods] : by_gs) {
    const float* in = x;
    if (gs > 0.0f) {
      xq.assign(x, x + rows * k);
      nvfp4_fake_quant_activations(xq.data(), rows, k, gs);
      in = xq.data();
    }
    // Each task owns whole column blocks: sums are added in row order whatever the thread count.
    std::vector<double> h(k * 16, 0.0);
    parallel_for(0, k / 16, 1, [&](size_t j0, size_t j1) {
      for (size_t j = j0; j < j1; ++j) {
        double* hj = h.data() + j * 256;
        for (size_t r = 0; r < rows; ++r) {
          const float* xb = in + r * k + j * 16;
          for (size_t a = 0; a < 16; ++a) {
            const double xa = xb[a];
            for (size_t b = 0; b < 16; ++b) hj[a * 16 + b] += xa * xb[b];
          }
        }
      }
    });
    std::vector<double> full;
    if (full_ && &into == &acc_) {  // each task owns whole rows of X^T X
      full.assign(k * k, 0.0);
      parallel_for(0, k, 1, [&](size_t a0, size_t a1) {
        for (size_t a = a0; a < a1; ++a)
          for (size_t r = 0; r < rows; ++r) {
            const double xa = in[r * k + a];
            const float* xr = in + r * k;
            double* fa = full.data() + a * k;
            for (size_t b = 0; b < k; ++b) fa[b] += xa * xr[b];
          }
      });
    }
    const std::lock_guard<std::mutex> lock(mu_.m);
    for (const std::string* m : mods) {
      Acc& acc = into[*m];
      if (acc.hess.empty()) acc.hess.assign(k * 16, 0.0);
      for (size_t i = 0; i < h.size(); ++i) acc.hess[i] += h[i];
      if (!full.empty()) {
        if (acc.xtx.empty()) acc.xtx.assign(k * k, 0.0);
        for (size_t i = 0; i < full.size(); ++i) acc.xtx[i] += full[i];
      }
    }
  }
}

void StatsCollector::routed(const std::string& expert_prefix, int64_t tokens) {
  const std::lock_guard<std::mutex> lock(mu_.m);
  routed_[expert_prefix] += tokens;
}

ActivationStats StatsCollector::result() const {
  ActivationStats s;
  for (const auto& [m, a] : acc_) {
    s.input_amax[m] = a.amax;
    s.input_sq_sum[m] = a.sq;
    s.token_count[m] = a.count;
    if (!a.hess.empty()) s.hessian_blocks[m] = a.hess;
    if (!a.xtx.empty()) s.xtx[m] = a.xtx;
  }
  for (const auto& [m, a] : expert_acc_) {
    s.token_count[m] = a.count;
    s.hessian_blocks[m] = a.hess;
  }
  s.routed_tokens = routed_;
  return s;
}

ActivationStats StatsCollector::take() {
  const std::lock_guard<std::mutex> lock(mu_.m);
  ActivationStats s;
  for (auto& [m, a] : acc_) {
    s.input_amax[m] = a.amax;
    s.input_sq_sum[m] = std::move(a.sq);
    s.token_count[m] = a.count;
    if (!a.hess.empty()) s.hessian_blocks[m] = std::move(a.hess);
    if (!a.xtx.empty()) s.xtx[m] = std::move(a.xtx);
  }
  for (auto& [m, a] : expert_acc_) {
    s.token_count[m] = a.count;
    s.hessian_blocks[m] = std::move(a.hess);
  }
  s.routed_tokens = std::move(routed_);
  acc_.clear();
  expert_acc_.clear();
  routed_.clear();
  return s;
}

std::map<std::string, float> w4a4_act_global_scales(const ActivationStats& st) {
  static const std::regex expert(R"(\.experts\.[0-9]+\.)");
  std::map<std::string, float> group_amax;
  for (const auto& [m, a] : st.input_amax) {
    float& g = group_amax[std::regex_replace(m, expert, ".experts.*.")];
    g = std::max(g, a);
  }
  std::map<std::string, float> gs;
  for (const auto& [m, a] : st.input_amax)
    gs[m] = 1.0f / nvfp4_global_scale(group_amax[std::regex_replace(m, expert, ".experts.*.")]);
  return gs;
}

}  // namespace fp4kit::engine
