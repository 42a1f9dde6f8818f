// The engine's blocks, each run alone on the CPU backend against a float64 re-implementation
// written here from the transformers definitions (llama / qwen3 attention, gated MLP, Qwen-MoE
// and Llama-4 MoE routing, shared expert with its sigmoid gate).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "engine/engine_support.hpp"
#include "fp4kit/engine/blocks/attention.hpp"
#include "fp4kit/engine/blocks/mlp.hpp"
#include "fp4kit/engine/blocks/moe.hpp"
#include "fp4kit/engine/weights.hpp"

namespace fp4kit::engine {
namespace {

using Vec = std::vector<double>;

std::vector<float> randv(std::mt19937& g, size_t n, float s = 1.0f) {
  return testing::random_normal(g, n, s);
}

Linear make_linear(Backend& be, std::mt19937& g, const std::string& name, size_t n, size_t k,
                   std::vector<float>* keep, bool bias = false, std::vector<float>* keep_bias = nullptr) {
  LinearWeights w;
  w.module = name;
  w.n = n;
  w.k = k;
  w.w = randv(g, n * k, 1.0f / std::sqrt(static_cast<float>(k)));
  *keep = w.w;
  if (bias) {
    w.bias = randv(g, n, 0.5f);
    *keep_bias = w.bias;
  }
  return be.upload(std::move(w));
}

// y = x W^T (+ b) in double; x [rows, k], W [n, k].
Vec mm(const Vec& x, size_t rows, size_t k, const std::vector<float>& w, size_t n,
       const std::vector<float>* b = nullptr) {
  Vec y(rows * n);
  for (size_t r = 0; r < rows; ++r)
    for (size_t j = 0; j < n; ++j) {
      double s = b ? (*b)[j] : 0.0;
      for (size_t c = 0; c < k; ++c) s += x[r * k + c] * w[j * k + c];
      y[r * n + j] = s;
    }
  return y;
}

Vec rmsn(const Vec& x, size_t rows, size_t d, const std::vector<float>* w, double eps) {
  Vec y(x.size());
  for (size_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (size_t i = 0; i < d; ++i) ss += x[r * d + i] * x[r * d + i];
    const double inv = 1.0 / std::sqrt(ss / d + eps);
    for (size_t i = 0; i < d; ++i) y[r * d + i] = x[r * d + i] * inv * (w ? (*w)[i] : 1.0);
  }
  return y;
}

double silu(double v) { return v / (1.0 + std::exp(-v)); }
double sigm(double v) { return 1.0 / (1.0 + std::exp(-v)); }

Vec to_d(const std::vector<float>& v) { return Vec(v.begin(), v.end()); }

void expect_close(const std::vector<float>& got, const Vec& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  double worst = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    worst = std::max(worst, std::fabs(got[i] - want[i]));
    scale = std::max(scale, std::fabs(want[i]));
  }
  EXPECT_LT(worst, tol * std::max(scale, 1.0)) << "scale " << scale;
}

struct BlockRun {
  std::unique_ptr<Backend> be = make_cpu_backend();
  Batch batch;
  explicit BlockRun(const std::vector<size_t>& lens, size_t chunk = 2048)
      : batch(Batch::make(lens, chunk)) {}
  std::vector<float> forward(Block& b, const std::vector<float>& h0,
                             ActivationObserver* obs = nullptr, bool all = false) {
    Buffer h = be->upload(std::vector<float>(h0));
    b.forward(RunContext{*be, batch, obs, all}, h.f());
    return std::vector<float>(h.f(), h.f() + h0.size());
  }
};

// Qwen3-style GQA attention with per-head q/k norms, RoPE (rotate_half), a sliding window and
// gpt-oss sinks, over two sequences in one batch (no attention across them).
TEST(Blocks, AttentionMatchesFloat64Reference) {
  std::mt19937 g(1);
  const size_t H = 32;
  const int nh = 4, nkv = 2, hd = 8;
  const std::vector<size_t> lens = {7, 5};
  BlockRun run(lens);
  AttentionConfig c;
  c.hidden = H;
  c.n_heads = nh;
  c.n_kv_heads = nkv;
  c.head_dim = hd;
  c.eps = 1e-6f;
  c.qk_norm = true;
  c.rope_params.theta = 100.0;
  c.rope_params.rotary_dim = hd;
  c.window = 4;
  AttentionWeights w;
  auto norm = randv(g, H, 0.3f);
  for (auto& v : norm) v += 1.0f;
  auto qn = randv(g, hd, 0.3f), kn = randv(g, hd, 0.3f), sinks = randv(g, nh);
  w.norm = run.be->upload(std::vector<float>(norm));
  w.q_norm = run.be->upload(std::vector<float>(qn));
  w.k_norm = run.be->upload(std::vector<float>(kn));
  w.sinks = run.be->upload(std::vector<float>(sinks));
  std::vector<float> wq, wk, wv, wo;
  w.q = make_linear(*run.be, g, "q", nh * hd, H, &wq);
  w.k = make_linear(*run.be, g, "k", nkv * hd, H, &wk);
  w.v = make_linear(*run.be, g, "v", nkv * hd, H, &wv);
  w.o = make_linear(*run.be, g, "o", H, nh * hd, &wo);
  AttentionBlock block(c, std::move(w));
  const auto h0 = randv(g, 12 * H);
  const auto got = run.forward(block, h0);

  Vec want = to_d(h0);
  size_t row0 = 0;
  for (size_t L : lens) {
    const Vec all = to_d(h0);
    const Vec x(all.begin() + row0 * H, all.begin() + (row0 + L) * H);
    const Vec xn = rmsn(x, L, H, &norm, 1e-6);
    Vec q = rmsn(mm(xn, L, H, wq, nh * hd), L * nh, hd, &qn, 1e-6);
    Vec k = rmsn(mm(xn, L, H, wk, nkv * hd), L * nkv, hd, &kn, 1e-6);
    const Vec v = mm(xn, L, H, wv, nkv * hd);
    auto rope = [&](Vec& t, int heads) {
      for (size_t p = 0; p < L; ++p)
        for (int h = 0; h < heads; ++h)
          for (int i = 0; i < hd / 2; ++i) {
            const double ang = p * std::pow(100.0, -2.0 * i / hd);
            double* r = &t[(p * heads + h) * hd];
            const double a = r[i], b = r[i + hd / 2];
            r[i] = a * std::cos(ang) - b * std::sin(ang);
            r[i + hd / 2] = b * std::cos(ang) + a * std::sin(ang);
          }
    };
    rope(q, nh);
    rope(k, nkv);
    Vec att(L * nh * hd, 0.0);
    for (size_t i = 0; i < L; ++i)
      for (int h = 0; h < nh; ++h) {
        const int kh = h / (nh / nkv);
        std::vector<double> s;
        double mx = sinks[h];
        for (size_t j = 0; j <= i; ++j) {
          double d = 0;
          for (int c2 = 0; c2 < hd; ++c2) d += q[(i * nh + h) * hd + c2] * k[(j * nkv + kh) * hd + c2];
          d /= std::sqrt(static_cast<double>(hd));
          s.push_back(i - j < 4 ? d : -INFINITY);
          mx = std::max(mx, s.back());
        }
        double sum = std::exp(sinks[h] - mx);
        for (double& e : s) sum += (e = std::exp(e - mx));
        for (size_t j = 0; j <= i; ++j)
          for (int c2 = 0; c2 < hd; ++c2)
            att[(i * nh + h) * hd + c2] += s[j] / sum * v[(j * nkv + kh) * hd + c2];
      }
    const Vec o = mm(att, L, nh * hd, wo, H);
    for (size_t i = 0; i < L * H; ++i) want[row0 * H + i] += o[i];
    row0 += L;
  }
  expect_close(got, want, 1e-5);
}

std::vector<float> mlp_ref(const std::vector<float>& x, size_t rows, size_t H, size_t I,
                           const std::vector<float>& wg, const std::vector<float>& wu,
                           const std::vector<float>& wd) {
  const Vec gx = mm(to_d(x), rows, H, wg, I), ux = mm(to_d(x), rows, H, wu, I);
  Vec a(rows * I);
  for (size_t i = 0; i < a.size(); ++i) a[i] = silu(gx[i]) * ux[i];
  const Vec y = mm(a, rows, I, wd, H);
  return std::vector<float>(y.begin(), y.end());
}

TEST(Blocks, DenseMlpMatchesFloat64Reference) {
  std::mt19937 g(2);
  const size_t H = 16, I = 24;
  BlockRun run({9});
  std::vector<float> wg, wu, wd;
  GatedMlp m;
  m.gate = make_linear(*run.be, g, "gate", I, H, &wg);
  m.up = make_linear(*run.be, g, "up", I, H, &wu);
  m.down = make_linear(*run.be, g, "down", H, I, &wd);
  auto norm = randv(g, H, 0.2f);
  DenseMlpBlock block(H, 1e-5f, run.be->upload(std::vector<float>(norm)), std::move(m));
  const auto h0 = randv(g, 9 * H);
  const auto got = run.forward(block, h0);
  const Vec xn = rmsn(to_d(h0), 9, H, &norm, 1e-5);
  const auto y = mlp_ref(std::vector<float>(xn.begin(), xn.end()), 9, H, I, wg, wu, wd);
  Vec want = to_d(h0);
  for (size_t i = 0; i < want.size(); ++i) want[i] += y[i];
  expect_close(got, want, 1e-5);
}

struct CountObs : ActivationObserver {
  std::map<std::string, size_t> rows;
  std::map<std::string, int64_t> routed_tokens;
  void linear_input(const std::vector<const std::string*>& m, const float*, size_t r,
                    size_t) override {
    for (auto* s : m) rows[*s] += r;
  }
  void routed(const std::string& e, int64_t t) override { routed_tokens[e] += t; }
};

// A MoE of E experts, top-k routing of `kind`, a gated shared expert; reference in float64.
void check_moe(RouterKind kind, bool norm_topk, bool scaled_input, bool shared) {
  std::mt19937 g(3);
  const size_t H = 16, I = 8, E = 5, K = 2, T = 11;
  BlockRun run({6, 5}, 4);  // chunks of 4 rows: experts run over several chunks
  MoeConfig c;
  c.hidden = H;
  c.eps = 1e-6f;
  c.router = {kind, K, norm_topk};
  c.scaled_input = scaled_input;
  MoeWeights w;
  auto norm = randv(g, H, 0.2f);
  for (auto& v : norm) v += 1.0f;
  w.norm = run.be->upload(std::vector<float>(norm));
  std::vector<float> wr, br;
  w.router = make_linear(*run.be, g, "router", E, H, &wr, true, &br);
  std::vector<std::vector<float>> eg(E), eu(E), ed(E);
  std::vector<GatedMlp> experts(E);
  for (size_t e = 0; e < E; ++e) {
    w.expert_names.push_back("experts." + std::to_string(e));
    experts[e].gate = make_linear(*run.be, g, "e" + std::to_string(e) + ".gate", I, H, &eg[e]);
    experts[e].up = make_linear(*run.be, g, "e" + std::to_string(e) + ".up", I, H, &eu[e]);
    experts[e].down = make_linear(*run.be, g, "e" + std::to_string(e) + ".down", H, I, &ed[e]);
  }
  w.load_expert = [&](size_t e) { return experts[e]; };
  std::vector<float> sg, su, sd, sgate;
  GatedMlp sh;
  if (shared) {
    sh.gate = make_linear(*run.be, g, "sh.gate", I, H, &sg);
    sh.up = make_linear(*run.be, g, "sh.up", I, H, &su);
    sh.down = make_linear(*run.be, g, "sh.down", H, I, &sd);
    w.load_shared = [&] { return sh; };
    w.shared_gate = make_linear(*run.be, g, "sh.g", 1, H, &sgate);
  }
  MoeBlock block(c, std::move(w));
  const auto h0 = randv(g, T * H);
  CountObs obs;
  const auto got = run.forward(block, h0, &obs);

  const Vec xn = rmsn(to_d(h0), T, H, &norm, 1e-6);
  const Vec lg = mm(xn, T, H, wr, E, &br);
  Vec want = to_d(h0);
  std::vector<int64_t> counts(E, 0);
  for (size_t t = 0; t < T; ++t) {
    std::vector<size_t> idx(E);
    for (size_t e = 0; e < E; ++e) idx[e] = e;
    std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return lg[t * E + a] > lg[t * E + b]; });
    double mx = lg[t * E + idx[0]], all = 0, topsum = 0;
    for (size_t e = 0; e < E; ++e) all += std::exp(lg[t * E + e] - mx);
    for (size_t j = 0; j < K; ++j) topsum += std::exp(lg[t * E + idx[j]] - mx);
    const std::vector<float> xt(xn.begin() + t * H, xn.begin() + (t + 1) * H);
    for (size_t j = 0; j < K; ++j) {
      const size_t e = idx[j];
      ++counts[e];
      const double p = std::exp(lg[t * E + e] - mx);
      double wt = kind == RouterKind::SoftmaxTopk ? (norm_topk ? p / topsum : p / all)
                  : kind == RouterKind::TopkSoftmax ? p / topsum
                                                    : sigm(lg[t * E + e]);
      std::vector<float> in = xt;
      if (scaled_input) {
        for (auto& v : in) v = static_cast<float>(v * wt);
        wt = 1.0;
      }
      const auto y = mlp_ref(in, 1, H, I, eg[e], eu[e], ed[e]);
      for (size_t c2 = 0; c2 < H; ++c2) want[t * H + c2] += wt * y[c2];
    }
    if (shared) {
      const auto y = mlp_ref(xt, 1, H, I, sg, su, sd);
      double gl = 0;
      for (size_t c2 = 0; c2 < H; ++c2) gl += xt[c2] * sgate[c2];
      for (size_t c2 = 0; c2 < H; ++c2) want[t * H + c2] += sigm(gl) * y[c2];
    }
  }
  expect_close(got, want, 1e-5);
  for (size_t e = 0; e < E; ++e) {
    EXPECT_EQ(obs.routed_tokens["experts." + std::to_string(e)], counts[e]);
    EXPECT_EQ(obs.rows["e" + std::to_string(e) + ".gate"], static_cast<size_t>(counts[e]));
  }

  // --all-experts: every expert sees every token, the output does not change.
  CountObs all_obs;
  const auto got_all = run.forward(block, h0, &all_obs, true);
  EXPECT_EQ(got_all, got);
  for (size_t e = 0; e < E; ++e) EXPECT_EQ(all_obs.rows["e" + std::to_string(e) + ".down"], T);
}

TEST(Blocks, MoeSoftmaxTopkRenormalisedWithGatedSharedExpert) {
  check_moe(RouterKind::SoftmaxTopk, true, false, true);
}
TEST(Blocks, MoeSoftmaxTopkNotRenormalised) { check_moe(RouterKind::SoftmaxTopk, false, false, false); }
TEST(Blocks, MoeTopkSoftmax) { check_moe(RouterKind::TopkSoftmax, false, false, false); }
TEST(Blocks, MoeTopkSigmoidScalesTheExpertInput) {
  check_moe(RouterKind::TopkSigmoid, false, true, false);
}

}  // namespace
}  // namespace fp4kit::engine
