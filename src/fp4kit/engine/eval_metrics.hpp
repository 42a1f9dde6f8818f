#pragma once
// Quality metrics between a base and a quantized model over the same tokens, defined exactly as
// llama.cpp's `llama-perplexity --kl-divergence` computes them (tools/perplexity/perplexity.cpp):
// per scored token, KLD = sum_v p_base(v) (log p_base(v) - log p_q(v)); dp = p_q(target) -
// p_base(target); "same top" = argmax agreement; uncertainties are standard errors of the mean
// (sqrt(var / (n - 1))), propagated the same way llama.cpp does.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fp4kit::engine {

// -log softmax(logits)[target], in double.
double token_nll(const float* logits, size_t vocab, int32_t target);
// out[v] = log softmax(logits)[v] (computed in double, stored as float).
void log_softmax(const float* logits, size_t vocab, float* out);

struct PerplexityResult {
  size_t count = 0;
  double mean_nll = 0, ppl = 0, ppl_uncertainty = 0;
};

class PerplexityAccumulator {
 public:
  void add(double nll);
  PerplexityResult result() const;

 private:
  double sum_ = 0, sum2_ = 0;
  size_t count_ = 0;
};

struct ValueWithError {
  double value = 0, uncertainty = 0;
};

struct KldSummary {
  size_t count = 0;
  ValueWithError ppl_q, ppl_base, ln_ppl_ratio, ppl_ratio, ppl_diff;
  double ln_ppl_correlation = 0;
  ValueWithError kld_mean;
  double kld_max = 0, kld_p999 = 0, kld_p99 = 0, kld_p95 = 0, kld_p90 = 0, kld_median = 0,
         kld_p10 = 0, kld_p05 = 0, kld_p01 = 0, kld_p001 = 0, kld_min = 0;
  ValueWithError dp_mean;  // fractions (printed as %)
  double dp_max = 0, dp_p999 = 0, dp_p99 = 0, dp_p95 = 0, dp_p90 = 0, dp_p75 = 0, dp_median = 0,
         dp_p25 = 0, dp_p10 = 0, dp_p05 = 0, dp_p01 = 0, dp_p001 = 0, dp_min = 0;
  ValueWithError dp_rms;
  ValueWithError same_top;
};

class KldAccumulator {
 public:
  // base_logprobs: log-softmax of the base model's row; quant_logits: raw logits of the
  // quantized model's row.
  void add(const float* base_logprobs, const float* quant_logits, size_t vocab, int32_t target);
  size_t count() const { return count_; }
  KldSummary summary() const;

 private:
  double sum_nll_ = 0, sum_nll2_ = 0, sum_nll_base_ = 0, sum_nll_base2_ = 0, sum_nll_nll_base_ = 0;
  double sum_kld_ = 0, sum_kld2_ = 0;
  double sum_dp_ = 0, sum_dp2_ = 0, sum_dp4_ = 0;
  size_t n_same_top_ = 0, count_ = 0;
  std::vector<float> kld_values_, dp_values_;
  std::vector<double> q_;  // scratch
};

// The "====== Perplexity statistics ======" ... "Same top p" block of llama-perplexity.
std::string format_kld_summary(const KldSummary& s);
nlohmann::json kld_summary_json(const KldSummary& s);

}  // namespace fp4kit::engine
