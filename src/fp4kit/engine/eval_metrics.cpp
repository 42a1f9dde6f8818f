#include "fp4kit/engine/eval_metrics.hpp"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "fp4kit/error.hpp"

namespace fp4kit::engine {
namespace {

double logsumexp(const float* x, size_t n) {
  float mx = x[0];
  for (size_t i = 1; i < n; ++i) mx = std::max(mx, x[i]);
  double s = 0.0;
  for (size_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(x[i]) - mx);
  return mx + std::log(s);
}

// llama.cpp's mean_and_uncertainty.
ValueWithError mean_unc(double sum, double sum2, size_t count) {
  if (count < 1) return {0, 0};
  const double f = sum / static_cast<double>(count);
  double df = sum2 / static_cast<double>(count) - f * f;
  df = df > 0 && count > 10 ? std::sqrt(df / static_cast<double>(count - 1)) : 0.0;
  return {f, df};
}

double covariance(double a, double b, double ab, size_t count) {
  if (count < 10) return 0.0;
  const double n = static_cast<double>(count);
  return (ab / n - (a / n) * (b / n)) / (n - 1);
}

// llama.cpp's percentile (linear interpolation on the sorted values).
double percentile(const std::vector<float>& v, double fraction) {
  if (v.empty()) return 0.0;
  if (fraction <= 0) return v.front();
  if (fraction >= 1) return v.back();
  double p = fraction * static_cast<double>(v.size() - 1);
  const size_t ip = static_cast<size_t>(p);
  p -= static_cast<double>(ip);
  return (1 - p) * v[ip] + p * v[std::min(ip + 1, v.size() - 1)];
}

double median(const std::vector<float>& v) {
  if (v.empty()) return 0.0;
  const size_t n = v.size();
  return n % 2 == 0 ? 0.5 * (static_cast<double>(v[n / 2]) + v[n / 2 - 1]) : v[n / 2];
}

}  // namespace

double token_nll(const float* logits, size_t vocab, int32_t target) {
  if (target < 0 || static_cast<size_t>(target) >= vocab)
    throw Error("target token " + std::to_string(target) + " is outside the vocabulary");
  // Rounded to float like the stored base log-probs, so a model compared with itself (or with
  // its saved log-probs) gives exactly the same numbers.
  const double lse = logsumexp(logits, vocab);
  return -static_cast<double>(static_cast<float>(logits[target] - lse));
}

void log_softmax(const float* logits, size_t vocab, float* out) {
  const double lse = logsumexp(logits, vocab);
  for (size_t i = 0; i < vocab; ++i) out[i] = static_cast<float>(logits[i] - lse);
}

void PerplexityAccumulator::add(double nll) {
  sum_ += nll;
  sum2_ += nll * nll;
  ++count_;
}

PerplexityResult PerplexityAccumulator::result() const {
  PerplexityResult r;
  r.count = count_;
  const ValueWithError m = mean_unc(sum_, sum2_, count_);
  r.mean_nll = m.value;
  r.ppl = std::exp(m.value);
  r.ppl_uncertainty = r.ppl * m.uncertainty;
  return r;
}

void KldAccumulator::add(const float* lb, const float* ql, size_t vocab, int32_t target) {
  if (target < 0 || static_cast<size_t>(target) >= vocab)
    throw Error("target token " + std::to_string(target) + " is outside the vocabulary");
  const double lse = logsumexp(ql, vocab);
  double kld = 0.0;
  size_t top_b = 0, top_q = 0;
  for (size_t v = 0; v < vocab; ++v) {
    // log p_q rounded to float exactly as log_softmax stores the base: identical models give 0.
    const double lq = static_cast<float>(ql[v] - lse);
    const double pb = std::exp(static_cast<double>(lb[v]));
    kld += pb * (static_cast<double>(lb[v]) - lq);
    if (lb[v] > lb[top_b]) top_b = v;
    if (ql[v] > ql[top_q]) top_q = v;
  }
  const double nll_q = -static_cast<double>(static_cast<float>(ql[target] - lse));
  const double nll_b = -static_cast<double>(lb[target]);
  const double dp = std::exp(-nll_q) - std::exp(-nll_b);
  sum_nll_ += nll_q;
  sum_nll2_ += nll_q * nll_q;
  sum_nll_base_ += nll_b;
  sum_nll_base2_ += nll_b * nll_b;
  sum_nll_nll_base_ += nll_q * nll_b;
  sum_kld_ += kld;
  sum_kld2_ += kld * kld;
  sum_dp_ += dp;
  sum_dp2_ += dp * dp;
  sum_dp4_ += dp * dp * dp * dp;
  if (top_b == top_q) ++n_same_top_;
  ++count_;
  kld_values_.push_back(static_cast<float>(kld));
  dp_values_.push_back(static_cast<float>(dp));
}

KldSummary KldAccumulator::summary() const {
  KldSummary s;
  s.count = count_;
  if (count_ == 0) return s;
  std::vector<float> k = kld_values_, d = dp_values_;
  std::sort(k.begin(), k.end());
  std::sort(d.begin(), d.end());
  const ValueWithError lq = mean_unc(sum_nll_, sum_nll2_, count_);
  const ValueWithError lb = mean_unc(sum_nll_base_, sum_nll_base2_, count_);
  s.ppl_q = {std::exp(lq.value), std::exp(lq.value) * lq.uncertainty};
  s.ppl_base = {std::exp(lb.value), std::exp(lb.value) * lb.uncertainty};
  const double cov = covariance(sum_nll_, sum_nll_base_, sum_nll_nll_base_, count_);
  s.ln_ppl_correlation =
      (lq.uncertainty > 0 && lb.uncertainty > 0) ? cov / (lq.uncertainty * lb.uncertainty) : 1.0;
  const double ratio_unc2 = lq.uncertainty * lq.uncertainty + lb.uncertainty * lb.uncertainty -
                            2.0 * cov;
  s.ln_ppl_ratio = {lq.value - lb.value, std::sqrt(std::max(0.0, ratio_unc2))};
  s.ppl_ratio = {std::exp(s.ln_ppl_ratio.value),
                 std::exp(s.ln_ppl_ratio.value) * s.ln_ppl_ratio.uncertainty};
  const double ppl_cov = s.ppl_q.value * s.ppl_base.value * cov;
  s.ppl_diff = {s.ppl_q.value - s.ppl_base.value,
                std::sqrt(std::max(0.0, s.ppl_q.uncertainty * s.ppl_q.uncertainty +
                                            s.ppl_base.uncertainty * s.ppl_base.uncertainty -
                                            2.0 * ppl_cov))};
  s.kld_mean = mean_unc(sum_kld_, sum_kld2_, count_);
  s.kld_max = k.back();
  s.kld_p999 = percentile(k, 0.999);
  s.kld_p99 = percentile(k, 0.99);
  s.kld_p95 = percentile(k, 0.95);
  s.kld_p90 = percentile(k, 0.90);
  s.kld_median = median(k);
  s.kld_p10 = percentile(k, 0.10);
  s.kld_p05 = percentile(k, 0.05);
  s.kld_p01 = percentile(k, 0.01);
  s.kld_p001 = percentile(k, 0.001);
  s.kld_min = k.front();
  s.dp_mean = mean_unc(sum_dp_, sum_dp2_, count_);
  s.dp_max = d.back();
  s.dp_p999 = percentile(d, 0.999);
  s.dp_p99 = percentile(d, 0.99);
  s.dp_p95 = percentile(d, 0.95);
  s.dp_p90 = percentile(d, 0.90);
  s.dp_p75 = percentile(d, 0.75);
  s.dp_median = median(d);
  s.dp_p25 = percentile(d, 0.25);
  s.dp_p10 = percentile(d, 0.10);
  s.dp_p05 = percentile(d, 0.05);
  s.dp_p01 = percentile(d, 0.01);
  s.dp_p001 = percentile(d, 0.001);
  s.dp_min = d.front();
  const ValueWithError mse = mean_unc(sum_dp2_, sum_dp4_, count_);
  const double rms = std::sqrt(mse.value);
  s.dp_rms = {rms, rms > 0 ? 0.5 / rms * mse.uncertainty : 0.0};
  const double top = static_cast<double>(n_same_top_) / static_cast<double>(count_);
  s.same_top = {top, count_ > 1 ? std::sqrt(top * (1.0 - top) / static_cast<double>(count_ - 1))
                                : 0.0};
  return s;
}

std::string format_kld_summary(const KldSummary& s) {
  std::string o;
  auto line = [&](const std::string& l) { o += l + "\n"; };
  line("====== Perplexity statistics ======");
  line(fmt::format("Mean PPL(Q)                   : {:10.6f} ± {:10.6f}", s.ppl_q.value,
                   s.ppl_q.uncertainty));
  line(fmt::format("Mean PPL(base)                : {:10.6f} ± {:10.6f}", s.ppl_base.value,
                   s.ppl_base.uncertainty));
  line(fmt::format("Cor(ln(PPL(Q)), ln(PPL(base))): {:6.2f}%", 100.0 * s.ln_ppl_correlation));
  line(fmt::format("Mean ln(PPL(Q)/PPL(base))     : {:10.6f} ± {:10.6f}", s.ln_ppl_ratio.value,
                   s.ln_ppl_ratio.uncertainty));
  line(fmt::format("Mean PPL(Q)/PPL(base)         : {:10.6f} ± {:10.6f}", s.ppl_ratio.value,
                   s.ppl_ratio.uncertainty));
  line(fmt::format("Mean PPL(Q)-PPL(base)         : {:10.6f} ± {:10.6f}", s.ppl_diff.value,
                   s.ppl_diff.uncertainty));
  line("");
  line("====== KL divergence statistics ======");
  line(fmt::format("Mean    KLD: {:10.6f} ± {:10.6f}", s.kld_mean.value, s.kld_mean.uncertainty));
  line(fmt::format("Maximum KLD: {:10.6f}", s.kld_max));
  line(fmt::format("99.9%   KLD: {:10.6f}", s.kld_p999));
  line(fmt::format("99.0%   KLD: {:10.6f}", s.kld_p99));
  line(fmt::format("95.0%   KLD: {:10.6f}", s.kld_p95));
  line(fmt::format("90.0%   KLD: {:10.6f}", s.kld_p90));
  line(fmt::format("Median  KLD: {:10.6f}", s.kld_median));
  line(fmt::format("10.0%   KLD: {:10.6f}", s.kld_p10));
  line(fmt::format(" 5.0%   KLD: {:10.6f}", s.kld_p05));
  line(fmt::format(" 1.0%   KLD: {:10.6f}", s.kld_p01));
  line(fmt::format(" 0.1%   KLD: {:10.6f}", s.kld_p001));
  line(fmt::format("Minimum KLD: {:10.6f}", s.kld_min));
  line("");
  line("====== Token probability statistics ======");
  line(fmt::format("Mean    Δp: {:6.3f} ± {:5.3f} %", 100.0 * s.dp_mean.value,
                   100.0 * s.dp_mean.uncertainty));
  line(fmt::format("Maximum Δp: {:6.3f}%", 100.0 * s.dp_max));
  line(fmt::format("99.9%   Δp: {:6.3f}%", 100.0 * s.dp_p999));
  line(fmt::format("99.0%   Δp: {:6.3f}%", 100.0 * s.dp_p99));
  line(fmt::format("95.0%   Δp: {:6.3f}%", 100.0 * s.dp_p95));
  line(fmt::format("90.0%   Δp: {:6.3f}%", 100.0 * s.dp_p90));
  line(fmt::format("75.0%   Δp: {:6.3f}%", 100.0 * s.dp_p75));
  line(fmt::format("Median  Δp: {:6.3f}%", 100.0 * s.dp_median));
  line(fmt::format("25.0%   Δp: {:6.3f}%", 100.0 * s.dp_p25));
  line(fmt::format("10.0%   Δp: {:6.3f}%", 100.0 * s.dp_p10));
  line(fmt::format(" 5.0%   Δp: {:6.3f}%", 100.0 * s.dp_p05));
  line(fmt::format(" 1.0%   Δp: {:6.3f}%", 100.0 * s.dp_p01));
  line(fmt::format(" 0.1%   Δp: {:6.3f}%", 100.0 * s.dp_p001));
  line(fmt::format("Minimum Δp: {:6.3f}%", 100.0 * s.dp_min));
  line(fmt::format("RMS Δp    : {:6.3f} ± {:5.3f} %", 100.0 * s.dp_rms.value,
                   100.0 * s.dp_rms.uncertainty));
  line(fmt::format("Same top p: {:6.3f} ± {:5.3f} %", 100.0 * s.same_top.value,
                   100.0 * s.same_top.uncertainty));
  return o;
}

nlohmann::json kld_summary_json(const KldSummary& s) {
  auto ve = [](const ValueWithError& v) {
    return nlohmann::json{{"value", v.value}, {"uncertainty", v.uncertainty}};
  };
  nlohmann::json j;
  j["count"] = s.count;
  j["ppl_q"] = ve(s.ppl_q);
  j["ppl_base"] = ve(s.ppl_base);
  j["ln_ppl_correlation"] = s.ln_ppl_correlation;
  j["ln_ppl_ratio"] = ve(s.ln_ppl_ratio);
  j["ppl_ratio"] = ve(s.ppl_ratio);
  j["ppl_diff"] = ve(s.ppl_diff);
  j["kld"] = {{"mean", ve(s.kld_mean)}, {"max", s.kld_max},     {"p99.9", s.kld_p999},
              {"p99", s.kld_p99},       {"p95", s.kld_p95},     {"p90", s.kld_p90},
              {"median", s.kld_median}, {"p10", s.kld_p10},     {"p5", s.kld_p05},
              {"p1", s.kld_p01},        {"p0.1", s.kld_p001},   {"min", s.kld_min}};
  j["delta_p"] = {{"mean", ve(s.dp_mean)}, {"max", s.dp_max},   {"p99.9", s.dp_p999},
                  {"p99", s.dp_p99},       {"p95", s.dp_p95},   {"p90", s.dp_p90},
                  {"p75", s.dp_p75},       {"median", s.dp_median}, {"p25", s.dp_p25},
                  {"p10", s.dp_p10},       {"p5", s.dp_p05},    {"p1", s.dp_p01},
                  {"p0.1", s.dp_p001},     {"min", s.dp_min},   {"rms", ve(s.dp_rms)}};
  j["same_top_p"] = ve(s.same_top);
  return j;
}

}  // namespace fp4kit::engine
